//! Zero-copy READ replies (host/src/runtime/spliced.rs): the file plugin's reads go from the
//! file to the socket through a pipe. Every shape of read must still return the file's bytes,
//! with simple and structured replies; a filter that looks at or changes the bytes must see
//! them; TLS, which cannot take spliced bytes, must still get them; a read the file cannot
//! satisfy must fail as a copying read does, with the connection going on.

use crate::support::*;
use std::fs;
use std::process::Command;

/// Reads of every size class around the pipe's capacity (1 MiB less a page), at aligned and
/// unaligned offsets, compared with the file, over simple and then structured replies, on a
/// Unix socket and on TCP.
const SHAPES: &str = r#"
import nbd, sys
want = open(sys.argv[-1], "rb").read()
shapes = [(1, 0), (1, 4095), (4096, 0), (4097, 1), (65536, 12345), (262144, 0),
          (262144, 1), (1044480, 0), (1044480, 4095), (1048576, 0), (2097152, 3),
          (4194304, 0), (4194304, 1)]
for structured in (False, True):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri(sys.argv[-2])
    assert h.get_structured_replies_negotiated() == structured
    for count, offset in shapes:
        got = h.pread(count, offset)
        assert got == want[offset:offset + count], (structured, count, offset)
    print("structured" if structured else "simple", "ok")
    h.shutdown()
"#;

/// Run SHAPES against `nbdbox ARGS` serving `file`: captive on a private Unix socket, or on
/// the TCP `port` given.
fn read_shapes(args: &[&str], file: &str, dir: &TempDir, port: Option<&str>) -> String {
    let py = dir.join("shapes.py");
    fs::write(&py, SHAPES).unwrap();
    let script = format!(
        "/usr/bin/python3 -c 'import nbd' && /usr/bin/python3 - \"$uri\" {} < {}",
        shell_quote(file),
        shell_quote(py.to_str().unwrap())
    );
    match port {
        None => assert_success(&run_captive(args, &script)),
        Some(port) => {
            let tcp = [&["-i", "127.0.0.1", "-p", port], args, &["--run", &script]].concat();
            assert_success(&nbdbox(&tcp))
        }
    }
}

#[test]
fn reads_of_every_shape_return_the_files_bytes() {
    let dir = TempDir::new("zcshapes");
    let (file, _) = disk(&dir, "disk.img", 31, 8 << 20);
    let out = read_shapes(&["-r", "file", &file], &file, &dir, None);
    assert_eq!(out, "simple ok\nstructured ok\n");
    // TCP: the header goes with MSG_MORE, the bytes by splice to a TCP socket.
    let port = free_port().to_string();
    let out = read_shapes(&["-r", "file", &file], &file, &dir, Some(&port));
    assert_eq!(out, "simple ok\nstructured ok\n", "over TCP");
}

/// strace sees the reads leave by splice(2), and the bytes are still right: the test fails
/// if the replies go back to being copied.
#[test]
fn reads_are_spliced_from_the_file_to_the_socket() {
    let strace = tool("strace");
    let dir = TempDir::new("zcstrace");
    let (file, data) = disk(&dir, "disk.img", 32, 16 << 20);
    let copy = dir.str("copy.img");
    let log = dir.str("strace.log");
    let o = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=splice", "-o", &log])
        .arg(bin())
        .args(["-r", "-U", "-", "file", &file, "--run"])
        .arg(format!("nbdcopy --request-size=262144 \"$uri\" {}", shell_quote(&copy)))
        .env("PATH", child_path())
        .output()
        .unwrap();
    assert_success(&o);
    assert!(fs::read(&copy).unwrap() == data, "the copy differs from the file");
    let calls = fs::read_to_string(&log).unwrap();
    let spliced: usize = calls
        .lines()
        .filter(|l| l.contains("splice(") && !l.contains("= -1"))
        .count();
    // 64 requests of 256 KiB: each one spliced in and out at least once.
    assert!(spliced >= 128, "only {spliced} splice calls:\n{calls:.2000}");
}

/// swab reads the bytes the plugin left in the buffer and writes them back swapped: with the
/// bytes in a pipe it must still see them (nbdkit gives the same copy).
#[test]
fn filters_that_read_the_reply_see_the_files_bytes() {
    tool("nbdcopy");
    let dir = TempDir::new("zcswab");
    let (file, data) = disk(&dir, "disk.img", 33, 4 << 20);
    for (args, name) in [
        (vec!["-r", "--filter=swab", "file", &file, "swab-bits=32"], "swab"),
        (
            vec!["-r", "--filter=offset", "file", &file, "offset=4096", "range=1048576"],
            "offset",
        ),
    ] {
        let (ours, theirs) = (dir.str(&format!("{name}.ours")), dir.str(&format!("{name}.theirs")));
        let copy = |out: &str| format!("nbdcopy --request-size=262144 \"$uri\" {}", shell_quote(out));
        assert_success(&run_captive(&args, &copy(&ours)));
        assert_success(&nbdkit_captive(&args, &copy(&theirs)));
        let (ours, theirs) = (fs::read(&ours).unwrap(), fs::read(&theirs).unwrap());
        assert!(ours == theirs, "{name}: bytes differ from nbdkit's");
        if name == "offset" {
            assert!(ours == data[4096..4096 + (1 << 20)], "offset: not the file's bytes");
        } else {
            assert!(ours != data, "swab: the bytes were not swapped");
        }
    }
}

/// A file cut short under a running server: a read past the new end fails with an error
/// reply (as nbdkit's file plugin fails it), and the same connection goes on reading.
#[test]
fn a_read_past_the_end_of_a_file_cut_short_fails_and_the_connection_goes_on() {
    let dir = TempDir::new("zccut");
    let (file, data) = disk(&dir, "disk.img", 34, 4 << 20);
    let srv = Server::start(&["file", &file]);
    let py = format!(
        r#"
import os
want = open({file:?}, "rb").read()
assert h.pread(262144, 0) == want[:262144]
os.truncate({file:?}, 1 << 20)
for offset in (1 << 20, (1 << 20) - 4096):
    try:
        h.pread(262144, offset)
        print("read past the end succeeded")
    except nbd.Error as e:
        print("error", e.errno)
assert h.pread(262144, 4096) == want[4096:4096 + 262144]
print("still reading")
"#
    );
    let o = Command::new(tool("/usr/bin/nbdsh"))
        .args(["-u", &srv.uri(), "-c", &py])
        .env("PATH", child_path())
        .output()
        .unwrap();
    let out = assert_success(&o);
    assert_eq!(out, "error EIO\nerror EIO\nstill reading\n", "{}", srv.stderr());
    drop(data);
}

/// TLS cannot take spliced bytes: the reply is copied into the buffer and encrypted.
#[test]
fn reads_over_tls_are_the_files_bytes() {
    let dir = TempDir::new("zctls");
    let pki = Pki::make(&dir);
    let (file, data) = disk(&dir, "disk.img", 35, 8 << 20);
    let copy = dir.str("copy.img");
    let psk = format!("--tls-psk={}", pki.psk.display());
    let script = format!(
        "nbdcopy --request-size=262144 \"nbds+unix://alice@/?socket=$unixsocket&tls-psk-file={}\" {}",
        pki.psk.display(),
        shell_quote(&copy)
    );
    assert_success(&run_captive(&["--tls=require", &psk, "-r", "file", &file], &script));
    assert!(fs::read(&copy).unwrap() == data, "what nbdcopy read over TLS differs");
}

/// A plugin that looks at its reply buffer after filling it from the file, and fills half
/// of it again (grant-probe), finds the file's bytes there and serves them.
#[test]
fn a_plugin_that_looks_at_what_it_read_sees_the_files_bytes() {
    let dir = TempDir::new("zclook");
    fs::create_dir(dir.join("granted")).unwrap();
    let (file, data) = disk(&dir, "granted/disk.img", 36, 4 << 20);
    let copy = dir.str("copy.img");
    let probe = guest("grant_probe.wasm");
    let o = run_captive(
        &[
            "-r",
            probe.to_str().unwrap(),
            &format!("file={file}"),
            &format!("dir={}", dir.str("granted")),
        ],
        &format!("nbdcopy --request-size=262144 \"$uri\" {}", shell_quote(&copy)),
    );
    assert_success(&o);
    assert!(fs::read(&copy).unwrap() == data, "the copy differs from the file");
}

/// `-s` (the client on stdin and stdout) cannot take spliced bytes either: they are copied.
#[test]
fn reads_over_stdio_are_the_files_bytes() {
    let dir = TempDir::new("zcstdio");
    let (file, _) = disk(&dir, "disk.img", 37, 8 << 20);
    let py = format!(
        r#"
import nbd
h = nbd.NBD()
h.connect_command([{bin:?}, "-s", "-r", "file", {file:?}])
want = open({file:?}, "rb").read()
for offset, count in [(0, 262144), (4096, 1 << 20), (1, 2 << 20), (12345, 65536)]:
    assert h.pread(count, offset) == want[offset:offset + count], (offset, count)
print("stdio ok")
"#,
        bin = bin().display().to_string()
    );
    let o = run_tool("/usr/bin/python3", &["-c", &py], None);
    assert_eq!(assert_success(&o), "stdio ok\n");
}
