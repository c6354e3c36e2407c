//! The built-in `info` plugin against nbdkit's: the export name, its base64 decoding (and
//! refusal of bad base64), the client's address, the three clocks, and nbdbox's version.

use crate::differential::*;
use crate::support::*;

/// Connect to export `$e` on `$unixsocket` and print the disk, or the error.
const READ_EXPORT: &str = r#"
import os
h.set_export_name(os.environ["e"])
try:
    h.connect_unix(os.environ["sock"])
    print(h.get_size(), bytes(h.pread(h.get_size(), 0)) if h.get_size() else b"", h.can_multi_conn())
except nbd.Error as e:
    print("refused", errno.errorcode.get(e.errnum, e.errnum))
"#;

fn read_export(dir: &TempDir, export: &str) -> String {
    let f = dir.join("read.py");
    std::fs::write(&f, format!("import errno\n{READ_EXPORT}")).unwrap();
    format!(
        "e={} sock=\"$unixsocket\" {} -c \"$(cat {})\"",
        shell_quote(export),
        tool("/usr/bin/nbdsh").display(),
        shell_quote(f.to_str().unwrap())
    )
}

#[test]
fn export_names_match_nbdkit() {
    let dir = TempDir::new("infoname");
    for (mode, export) in [
        ("exportname", "hello"),
        ("mode=EXPORTNAME", "a longer name, with spaces"),
        ("export-name", ""),
        ("base64exportname", "aGVsbG8="),
        ("base64-export-name", "aGVs bG8="),
        ("base64exportname", "+/+/"),
        ("base64exportname", ""),
        ("base64exportname", "aGVsbG8"),
        ("base64exportname", "a*b="),
    ] {
        let out = same_as_nbdkit(&["info", mode], &read_export(&dir, export));
        assert!(!out.is_empty(), "{mode} {export}");
    }
    let out = same_as_nbdkit(&["info", "base64exportname"], &read_export(&dir, "aGVsbG8="));
    assert!(out.contains("b'hello'"), "{out}");
}

#[test]
fn the_address_matches_nbdkit() {
    let dir = TempDir::new("infoaddr");
    let out = same_as_nbdkit(&["info", "address"], &read_export(&dir, ""));
    assert!(out.contains("b'unix' False"), "{out}");
    // Over TCP: the client's own address and port, as it sees them.
    let port = free_port().to_string();
    let py = "import socket\nprint(bytes(h.pread(h.get_size(), 0)).decode())\n";
    let script = format!("nbdsh -u nbd://127.0.0.1:{port} -c {}", shell_quote(py));
    let o = run_with_timeout(
        {
            let mut c = std::process::Command::new(bin());
            c.args(["-p", &port, "-i", "127.0.0.1", "--run", &script, "info", "address"]);
            c
        },
        DEFAULT_TIMEOUT,
    );
    let addr = assert_success(&o);
    assert!(addr.trim().starts_with("127.0.0.1:"), "{}", describe(&o));
}

#[test]
fn clocks_count_from_the_right_moment() {
    let dir = TempDir::new("infotime");
    let py = r#"
import time, struct
def clock():
    b = h.pread(12, 0)
    s, us = struct.unpack(">QI", b)
    return s + us / 1e6
print("value", clock())
"#;
    let read = nbdsh_loose(&dir, "clock", py);
    let wall = assert_success(&run_captive(&["info", "time"], &read));
    let wall: f64 = value(&wall, "value").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - wall).abs() < 30.0, "time mode says {wall}, now is {now}");
    let up = assert_success(&run_captive(&["info", "uptime"], &format!("sleep 1 && {read}")));
    let up: f64 = value(&up, "value").parse().unwrap();
    assert!((1.0..30.0).contains(&up), "uptime {up} after sleeping 1 s");
    let conn = assert_success(&run_captive(&["info", "conntime"], &format!("sleep 1 && {read}")));
    let conn: f64 = value(&conn, "value").parse().unwrap();
    assert!((0.0..1.0).contains(&conn), "conntime {conn} on a fresh connection");
    for mode in ["time", "uptime", "conntime"] {
        same_as_nbdkit(
            &["info", mode],
            NBDINFO.replace("nbdinfo", "nbdinfo --no-content").as_str(),
        );
    }
}

#[test]
fn version_is_nbdboxs() {
    let dir = TempDir::new("infoversion");
    let out = assert_success(&run_captive(&["info", "version"], &read_export(&dir, "")));
    let version = value(&stdout(&nbdbox(&["--dump-config"])).replace('=', " "), "nbdbox_version");
    assert_eq!(out.trim(), format!("{} b'{version}' True", version.len()));
}

#[test]
fn an_unknown_mode_is_refused_as_by_nbdkit() {
    both_refuse(&["info", "mode=clock"]);
}
