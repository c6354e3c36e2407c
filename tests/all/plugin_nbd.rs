//! The built-in `nbd` plugin fronting real NBD servers: qemu-nbd (raw files and qcow2, so
//! nbdbox serves qemu's block drivers) and Debian's nbdkit. Bytes read and written through
//! nbdbox land in the upstream; the allocation map, zeroes, trims and read-only exports pass
//! through; an upstream that goes away costs EIO and the server goes on; and a differential
//! against nbdkit's own nbd plugin on the same upstream.

use crate::support::*;
use std::fs;
use std::time::Duration;

/// Run `script` under nbdbox (or nbdkit, the reference) serving `nbd ARGS...`.
fn through(reference: bool, args: &[&str], script: &str) -> String {
    let mut full = vec!["nbd"];
    full.extend_from_slice(args);
    let o = if reference {
        nbdkit_captive(&full, script)
    } else {
        run_captive(&full, script)
    };
    assert_success(&o)
}

/// nbdcopy the export to a file and return its bytes.
fn copy_out(dir: &TempDir, args: &[&str], name: &str) -> Vec<u8> {
    let out = dir.str(name);
    through(false, args, &format!("nbdcopy \"$uri\" {}", shell_quote(&out)));
    fs::read(&out).unwrap()
}

#[test]
fn serves_qemu_nbd_byte_for_byte() {
    let dir = TempDir::new("nbdq");
    let (image, data) = disk(&dir, "disk.raw", 21, 8 << 20);
    let upstream = NbdUpstream::qemu(&dir, "q", &image, "raw", &[]);
    assert!(copy_out(&dir, &[&upstream.socket_arg()], "a.raw") == data);
    // The magic key, an nbd+unix URI.
    assert!(copy_out(&dir, &[&upstream.uri()], "b.raw") == data);
    // qemu-img reads through it too.
    let out = dir.str("c.raw");
    through(
        false,
        &[&upstream.socket_arg()],
        &format!("qemu-img convert -O raw \"$nbd\" {}", shell_quote(&out)),
    );
    assert!(fs::read(&out).unwrap() == data);
}

#[test]
fn over_tcp_with_hostname_and_port_or_a_uri() {
    let dir = TempDir::new("nbdtcp");
    let (image, data) = disk(&dir, "disk.raw", 22, 1 << 20);
    let port = free_port();
    let _upstream = NbdUpstream::qemu_tcp(port, &image, "raw");
    let port_arg = format!("port={port}");
    assert!(copy_out(&dir, &["hostname=127.0.0.1", &port_arg], "a.raw") == data);
    let uri = format!("nbd://127.0.0.1:{port}");
    assert!(copy_out(&dir, &[&uri], "b.raw") == data);
}

#[test]
fn writes_through_nbdbox_land_in_the_upstream_file() {
    let dir = TempDir::new("nbdw");
    let image = dir.join("disk.raw");
    fs::write(&image, vec![0; 4 << 20]).unwrap();
    let (src, data) = disk(&dir, "src.raw", 9, 1 << 20);
    let upstream = NbdUpstream::qemu(&dir, "q", &image, "raw", &[]);
    let script = format!(
        "nbdcopy {} \"$uri\" && qemu-io -f raw -c 'write -P 0x5a 2M 64k' \"$nbd\" >/dev/null",
        shell_quote(&src)
    );
    through(false, &[&upstream.socket_arg()], &script);
    drop(upstream);
    let file = fs::read(&image).unwrap();
    assert!(file[..1 << 20] == data[..], "nbdcopy's bytes are in the file");
    assert!(
        file[2 << 20..(2 << 20) + 65536].iter().all(|&b| b == 0x5a),
        "qemu-io's write is in the file"
    );
    assert!(file[(2 << 20) + 65536..].iter().all(|&b| b == 0));
}

#[test]
fn fronts_qemus_qcow2_driver() {
    let dir = TempDir::new("nbdqcow");
    let qcow2 = dir.str("disk.qcow2");
    assert_success(&run_tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &qcow2, "16M"],
        None,
    ));
    let (src, data) = sparse_image(&dir, "src.raw", 16 << 20, &[(0, 65536), (5 << 20, 3 << 20)]);
    let upstream = NbdUpstream::qemu(&dir, "q", &qcow2, "qcow2", &[]);
    let script = format!("qemu-img convert -n -f raw -O raw {} \"$nbd\"", shell_quote(&src));
    through(false, &[&upstream.socket_arg()], &script);
    assert!(copy_out(&dir, &[&upstream.socket_arg()], "back.raw") == data);
    // The map through nbdbox is the qcow2's own allocation.
    let ours = through(false, &[&upstream.socket_arg()], "nbdinfo --map \"$uri\"");
    let theirs = assert_success(&run_tool("nbdinfo", &["--map", &upstream.uri()], None));
    assert_eq!(ours, theirs);
    assert!(theirs.lines().count() >= 3, "{theirs}");
    drop(upstream);
    let plain = dir.str("plain.raw");
    assert_success(&run_tool(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", &qcow2, &plain],
        None,
    ));
    assert!(fs::read(&plain).unwrap() == data, "the bytes landed in the qcow2");
}

#[test]
fn the_map_is_the_upstreams() {
    let dir = TempDir::new("nbdmap");
    let (image, _) = sparse_image(&dir, "disk.raw", 8 << 20, &[(1 << 20, 65536), (5 << 20, 1 << 20)]);
    let upstream = NbdUpstream::qemu(&dir, "q", &image, "raw", &[]);
    let theirs = assert_success(&run_tool("nbdinfo", &["--map", &upstream.uri()], None));
    let ours = through(false, &[&upstream.socket_arg()], "nbdinfo --map \"$uri\"");
    assert_eq!(ours, theirs);
    assert!(theirs.contains("hole") && theirs.contains("data"), "{theirs}");
    // nbdkit upstream, allocation made through nbdbox.
    let upstream = NbdUpstream::nbdkit(&dir, "k", &["memory", "4M"]);
    let py = "h.pwrite(b'x' * 65536, 1048576)\nh.pwrite(b'y' * 4096, 3145728)\n";
    through(false, &[&upstream.socket_arg()], &nbdsh(&dir, "fill", py));
    let theirs = assert_success(&run_tool("nbdinfo", &["--map", &upstream.uri()], None));
    let ours = through(false, &[&upstream.socket_arg()], "nbdinfo --map \"$uri\"");
    assert_eq!(ours, theirs);
    assert_eq!(theirs.lines().count(), 5, "{theirs}");
}

#[test]
fn zero_trim_and_flush_pass_through_as_themselves() {
    let dir = TempDir::new("nbdzero");
    let log = dir.str("upstream.log");
    let upstream = NbdUpstream::nbdkit(&dir, "k", &["--filter=log", "memory", "1M", &format!("logfile={log}")]);
    let py = "h.pwrite(b'\\xaa' * 131072, 0)\n\
              h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO)\n\
              h.trim(4096, 65536)\n\
              h.zero(4096, 69632, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)\n\
              h.flush()\n\
              print(h.pread(65536, 0) == bytes(65536), h.pread(8192, 65536)[4096:] == bytes(4096))\n";
    let out = through(false, &[&upstream.socket_arg()], &nbdsh(&dir, "zero", py));
    assert_eq!(out.trim(), "True True");
    let log = fs::read_to_string(&log).unwrap();
    // "DATE TIME connection=N CALL ..." for each request; replies start with "...".
    let calls: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" connection=").and_then(|(_, rest)| rest.split_once(' ')))
        .map(|(_, call)| call)
        .filter(|call| !call.starts_with("...") && !call.starts_with("Connect") && !call.starts_with("Disconnect"))
        .collect();
    let expected = [
        "Write id=1 offset=0x0 count=0x20000 fua=0 ...",
        "Zero id=2 offset=0x0 count=0x10000 trim=1 fua=0 fast=1 ...",
        "Trim id=3 offset=0x10000 count=0x1000 fua=0 ...",
        "Zero id=4 offset=0x11000 count=0x1000 trim=0 fua=1 fast=0 ...",
        "Flush id=5 ...",
    ];
    let calls: Vec<String> = calls.iter().map(|c| c.to_string()).collect();
    assert!(
        expected.iter().all(|e| calls.iter().any(|c| c == e)),
        "upstream saw:\n{}",
        calls.join("\n")
    );
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("Write")).count(),
        1,
        "zero was not emulated by writes"
    );
}

#[test]
fn a_read_only_upstream_gives_a_read_only_export() {
    let dir = TempDir::new("nbdro");
    let (image, data) = disk(&dir, "disk.raw", 3, 1 << 20);
    let upstream = NbdUpstream::qemu(&dir, "q", &image, "raw", &["--read-only"]);
    let info = through(false, &[&upstream.socket_arg()], "nbdinfo --json \"$uri\"");
    assert!(info.contains("\"is_read_only\": true"), "{info}");
    let o = run_captive(
        &["nbd", &upstream.socket_arg()],
        "qemu-io -f raw -c 'write -P 1 0 4k' \"$nbd\"",
    );
    assert!(!o.status.success() || stdout(&o).contains("failed"), "{}", describe(&o));
    assert!(fs::read(&image).unwrap() == data);
}

#[test]
fn an_upstream_that_goes_away_gives_eio_and_the_server_goes_on() {
    let dir = TempDir::new("nbdgone");
    let (image, data) = disk(&dir, "disk.raw", 4, 1 << 20);
    let upstream = NbdUpstream::qemu(&dir, "q", &image, "raw", &[]);
    let server = Server::start(&["nbd", &upstream.socket_arg()]);
    // Read, then kill qemu-nbd from inside the client, then read again.
    let py = format!(
        "import os, signal, time\n\
         h.pread(4096, 0)\n\
         os.killpg({pid}, signal.SIGKILL)\n\
         time.sleep(0.5)\n\
         try:\n    h.pread(4096, 4096)\n    print('read')\n\
         except nbd.Error as e:\n    print(e.errno)\n",
        pid = upstream.pid
    );
    let script = nbdsh_uri_script(&dir, &server.uri(), &py);
    let o = run_tool("/bin/sh", &["-c", &script], None);
    assert_eq!(assert_success(&o).trim(), "EIO", "{}", describe(&o));
    drop(upstream);
    let mut server = server;
    assert!(server.alive(), "{}", server.stderr());
    // A new upstream on the same socket: new clients are served again.
    let _upstream = NbdUpstream::qemu(&dir, "q", &image, "raw", &[]);
    let out = dir.str("again.raw");
    let o = run_tool("nbdcopy", &[&server.uri(), &out], None);
    assert_success(&o);
    assert!(fs::read(&out).unwrap() == data);
}

/// An nbdsh command line for `py` against `uri`.
fn nbdsh_uri_script(dir: &TempDir, uri: &str, py: &str) -> String {
    let f = dir.join("client.py");
    fs::write(&f, py).unwrap();
    format!(
        "/usr/bin/nbdsh -u {} -c \"$(cat {})\"",
        shell_quote(uri),
        shell_quote(f.to_str().unwrap())
    )
}

#[test]
fn retry_waits_for_a_late_upstream() {
    let dir = TempDir::new("nbdretry");
    let (image, _) = disk(&dir, "disk.raw", 5, 1 << 20);
    let sock = dir.join("late.sock");
    let arg = format!("socket={}", sock.display());
    // Without retry, a missing server fails the client at once.
    let o = run_captive(&["nbd", &arg], "nbdinfo --size \"$uri\"");
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("late.sock"),
        "the error names the socket\n{}",
        describe(&o)
    );
    // With retry=10 the client waits while the server comes up 1.5 s later.
    let client = std::thread::spawn(move || {
        let o = run_captive(&["nbd", &arg, "retry=10"], "nbdinfo --size \"$uri\"");
        assert_success(&o)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let _upstream = NbdUpstream::qemu(&dir, "late", &image, "raw", &[]);
    assert_eq!(client.join().unwrap().trim(), (1 << 20).to_string());
}

#[test]
fn dynamic_export_passes_the_clients_name_and_lists_the_upstreams() {
    let dir = TempDir::new("nbddyn");
    let exports = dir.join("exports");
    fs::create_dir(&exports).unwrap();
    fs::write(exports.join("a"), pattern(1, 65536)).unwrap();
    fs::write(exports.join("b"), pattern(2, 131072)).unwrap();
    let upstream = NbdUpstream::nbdkit(&dir, "k", &["file", &format!("dir={}", exports.display())]);
    let list = "nbdinfo --list --json \"$uri\"";
    let ours = through(false, &[&upstream.socket_arg(), "dynamic-export=true"], list);
    let theirs = assert_success(&run_tool("nbdinfo", &["--list", "--json", &upstream.uri()], None));
    let mut names = export_names(&ours);
    assert_eq!(names, export_names(&theirs), "the upstream's list, in its order");
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let size_of_b = "nbdinfo --size \"nbd+unix:///b?socket=$unixsocket\"";
    let size = through(false, &[&upstream.socket_arg(), "dynamic-export=true"], size_of_b);
    assert_eq!(size.trim(), "131072");
    // Without it, export= decides whatever the client asks for, and is what is listed.
    let size = through(false, &[&upstream.socket_arg(), "export=a"], size_of_b);
    assert_eq!(size.trim(), "65536");
    assert_eq!(
        export_names(&through(false, &[&upstream.socket_arg(), "export=a"], list)),
        ["a"]
    );
}

#[test]
fn what_nbdbox_cannot_do_is_refused_with_a_reason() {
    for (args, why) in [
        (&["socket=/nonexistent", "shared=true"][..], "shared=true"),
        (&["socket=/nonexistent", "tls=require"], "TLS"),
        (&["socket=/nonexistent", "tls-certificates=/etc"], "TLS"),
        (&["socket=/nonexistent", "port=10809"], "'port'"),
        (&["socket=/nonexistent", "hostname=localhost"], "cannot mix"),
        (&["export=x"], "exactly one"),
        (&["nbds://localhost/"], "nbd://"),
        (&["socket=/nonexistent", "command=qemu-nbd"], "command"),
    ] {
        let mut full = vec!["nbd"];
        full.extend_from_slice(args);
        let o = run_captive(&full, "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"), "{args:?}\n{}", describe(&o));
        assert!(stderr(&o).contains(why), "{args:?}: expected {why:?}\n{}", describe(&o));
    }
}

/// What nbdinfo reports, without the lines that name the (different) sockets.
fn info_without_uris(info: &str) -> String {
    info.lines()
        .filter(|l| !l.contains("\"uri\""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn differential_against_nbdkits_nbd_plugin() {
    let dir = TempDir::new("nbddiff");
    let (image, _) = sparse_image(&dir, "disk.raw", 8 << 20, &[(0, 4096), (3 << 20, 2 << 20)]);
    let qemu = NbdUpstream::qemu(&dir, "q", &image, "raw", &[]);
    let qemu_ro = NbdUpstream::qemu(&dir, "qro", &image, "raw", &["--read-only"]);
    let nbdkit = NbdUpstream::nbdkit(&dir, "k", &["pattern", "5M"]);
    let script = "nbdinfo --json \"$uri\" && nbdinfo --map \"$uri\" && nbdcopy \"$uri\" - | sha256sum";
    for upstream in [&qemu, &qemu_ro, &nbdkit] {
        let ours = through(false, &[&upstream.socket_arg()], script);
        let theirs = through(true, &[&upstream.socket_arg()], script);
        assert_eq!(info_without_uris(&ours), info_without_uris(&theirs));
    }
}
