//! The built-in `exitlast` filter: the server exits once its last client has gone, not
//! before the first one and not while another is still connected; a client that only asks
//! for export information (OPT_INFO, `nbdinfo --list`) counts, as with nbdkit.

use crate::support::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Wait up to `limit` for the server process to end.
fn exits_within(srv: &mut Server, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !srv.alive() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    !srv.alive()
}

fn nbdinfo(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(tool("nbdinfo"));
    c.args(args);
    run_with_timeout(c, DEFAULT_TIMEOUT)
}

#[test]
fn exitlast_exits_after_the_only_client() {
    let mut srv = Server::start(&["--filter=exitlast", "memory", "1M"]);
    thread::sleep(Duration::from_secs(1));
    assert!(srv.alive(), "exitlast must not exit before the first client");
    let info = nbdinfo(&[&srv.uri()]);
    assert!(
        exits_within(&mut srv, Duration::from_secs(10)),
        "no exit within 10 s of the last client"
    );
    let sock = srv.sock.clone();
    let err = srv.stderr();
    let status = srv.stop();
    assert!(status.success(), "exit status {status:?}\n{err}");
    assert!(!sock.exists(), "socket left behind");
    // nbdkit lets this client finish: nbdinfo's OPT_INFO closes the export (the
    // count hits 0, shutdown starts) but its OPT_GO that follows still succeeds.
    assert!(
        info.status.success(),
        "nbdinfo must succeed, as with nbdkit's exitlast\n{}\n--- server ---\n{err}",
        describe(&info)
    );
}

#[test]
fn exitlast_waits_for_the_last_of_two_clients() {
    let mut srv = Server::start(&["--filter=exitlast", "memory", "1M"]);
    let mut holder = Command::new(tool("/usr/bin/nbdsh"))
        .args([
            "-u",
            &srv.uri(),
            "-c",
            "import sys\nprint('up', flush=True)\nsys.stdin.readline()\nh.pread(512, 0)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("PATH", child_path())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "up",
        "the first client could not connect\n{}",
        srv.stderr()
    );

    let info = nbdinfo(&[&srv.uri()]);
    assert!(info.status.success(), "{}", describe(&info));
    thread::sleep(Duration::from_secs(1));
    assert!(srv.alive(), "the server exited while a client was still connected");

    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let st = holder.wait().unwrap();
    assert!(st.success(), "the first client's read after the other left failed");
    assert!(
        exits_within(&mut srv, Duration::from_secs(10)),
        "no exit after the last client"
    );
    let status = srv.stop();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn exitlast_counts_an_opt_info() {
    let mut srv = Server::start(&["--filter=exitlast", "memory", "1M"]);
    let o = nbdinfo(&["--list", &srv.uri()]);
    assert_success(&o);
    assert!(
        exits_within(&mut srv, Duration::from_secs(10)),
        "nbdinfo --list (OPT_INFO) must make exitlast exit, as nbdkit"
    );
    assert!(srv.stop().success());
}
