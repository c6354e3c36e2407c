//! Filters (`--filter=NAME`): the order calls reach each layer, the built-in
//! readahead, retry and exitlast filters, a trapping filter, the thread model a
//! filter imposes, and the command-line errors around filters.
//!
//! The test-only `recorder` filter logs every call it handles (`recorder NAME:
//! CALL`, visible with `-v`); `faulty` injects failures and traps.

use crate::plugin_file::nbdsh;
use crate::support::nbd::EIO;
use crate::support::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn guest_str(name: &str) -> String {
    guest(&format!("{name}.wasm")).to_str().unwrap().to_owned()
}

fn filter_arg(name: &str) -> String {
    format!("--filter={}", guest_str(name))
}

/// Shell fragment running a Python program with Debian's python and libnbd;
/// the program gets the URI as `URI`, and must connect itself (needed to ask
/// for a meta context before connecting).
fn python(dir: &TempDir, name: &str, code: &str) -> String {
    let python = tool("/usr/bin/python3");
    let f = dir.join(&format!("{name}.py"));
    fs::write(&f, format!("import nbd, sys, time, errno\nURI = sys.argv[1]\n{code}")).unwrap();
    format!("{} {} \"$uri\"", python.display(), sq(f.to_str().unwrap()))
}

/// The calls the recorders logged, in order, as `NAME: CALL`.
fn recorded(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.rfind("recorder ").map(|i| l[i + "recorder ".len()..].to_owned()))
        .collect()
}

/// `key value` lines printed by a client script.
fn value(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no `{key}` line in client output:\n{out}"))
        .trim()
        .to_owned()
}

fn seconds(out: &str, key: &str) -> f64 {
    value(out, key).parse().unwrap()
}

/// How many times the faulty filter was opened (it logs `faulty: open #N`).
fn faulty_opens(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter_map(|l| l.split("faulty: open #").nth(1))
        .map(|n| n.trim().parse().unwrap())
        .collect()
}

/// A disk file of `len` bytes filled with `pattern(seed)`.
fn disk(dir: &TempDir, name: &str, seed: u64, len: usize) -> (String, Vec<u8>) {
    let path = dir.str(name);
    let data = pattern(seed, len);
    fs::write(&path, &data).unwrap();
    (path, data)
}

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

// ---------------------------------------------------------------------------
// Layer call order (nbdkit's test-layers)
// ---------------------------------------------------------------------------

#[test]
fn call_order_through_three_layers() {
    let dir = TempDir::new("layers");
    let r = filter_arg("recorder");
    let script = python(
        &dir,
        "ops",
        r#"
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(URI)
h.pwrite(b"L" * 512, 1024)
assert h.pread(512, 1024) == b"L" * 512, "data through three filters"
h.flush()
h.trim(512, 2048)
h.zero(512, 4096)
seen = []
h.block_status(65536, 0, lambda meta, off, ents, err: seen.append(meta))
assert seen == ["base:allocation"], seen
h.cache(4096, 8192)
h.shutdown()
print("done ok")
"#,
    );
    let o = run_captive(
        &[
            "-v",
            &r,
            &r,
            &r,
            "memory",
            "1M",
            "recorder=f3",
            "recorder=f2",
            "recorder=f1",
        ],
        &script,
    );
    assert_eq!(value(&ok(&o), "done"), "ok", "{}", show(&o));

    let outer_in = ["f3", "f2", "f1"];
    let inner_out = ["f1", "f2", "f3"];
    let phase = |order: &[&str], call: &str| -> Vec<String> { order.iter().map(|f| format!("{f}: {call}")).collect() };
    let phases: Vec<(&str, Vec<String>)> = vec![
        ("config-complete", phase(&outer_in, "config-complete")),
        ("get-ready", phase(&inner_out, "get-ready")),
        ("open", phase(&inner_out, "open")),
        ("prepare", phase(&inner_out, "prepare")),
        ("get-size", phase(&outer_in, "get-size")),
        ("capabilities", phase(&outer_in, "capabilities")),
        ("pwrite", phase(&outer_in, "pwrite count=512 offset=1024")),
        ("pread", phase(&outer_in, "pread count=512 offset=1024")),
        ("flush", phase(&outer_in, "flush")),
        ("trim", phase(&outer_in, "trim count=512 offset=2048")),
        ("zero", phase(&outer_in, "zero count=512 offset=4096")),
        ("extents", phase(&outer_in, "extents count=65536 offset=0")),
        ("cache", phase(&outer_in, "cache count=4096 offset=8192")),
        ("finalize", phase(&outer_in, "finalize")),
        ("close", phase(&outer_in, "close")),
    ];
    let got = recorded(&stderr(&o));
    // Phase by phase first, for a readable failure.
    let mut rest = got.as_slice();
    for (name, want) in &phases {
        let n = want.len().min(rest.len());
        assert_eq!(
            &rest[..n],
            &want[..],
            "phase {name}: wrong calls or order (nbdkit §4.4)\nall recorded calls: {got:#?}"
        );
        rest = &rest[n..];
    }
    assert!(rest.is_empty(), "unexpected calls after close: {rest:?}");
}

// ---------------------------------------------------------------------------
// retry
// ---------------------------------------------------------------------------

/// nbdsh snippet: time one read of the first 64 KiB; print its outcome, digest and duration.
const TIMED_READ: &str = r#"
import hashlib, time
t = time.monotonic()
try:
    d = h.pread(65536, 0)
    print("result ok")
    print("sha", hashlib.sha256(d).hexdigest())
except nbd.Error as e:
    print("result", e.errno)
print("elapsed", time.monotonic() - t)
"#;

fn sha256_hex(data: &[u8]) -> String {
    let o = {
        let mut c = Command::new("/usr/bin/python3");
        c.args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap()
    };
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

#[test]
fn retry_recovers_after_three_failures() {
    let dir = TempDir::new("retry3");
    let (img, data) = disk(&dir, "disk.img", 61, 1 << 20);
    let o = run_captive(
        &[
            "-v",
            "--filter=retry",
            &filter_arg("faulty"),
            "file",
            &img,
            "fail-first=3",
            "retry-delay=1",
            "retry-exponential=no",
        ],
        &nbdsh(&dir, "r", TIMED_READ),
    );
    let out = ok(&o);
    assert_eq!(
        value(&out, "result"),
        "ok",
        "the read must succeed after 3 retries\n{}",
        show(&o)
    );
    assert_eq!(
        value(&out, "sha"),
        sha256_hex(&data[..65536]),
        "retried read returned wrong bytes"
    );
    let t = seconds(&out, "elapsed");
    assert!(
        t >= 3.0,
        "3 retries of 1 s each must take ≥ 3 s, took {t:.2} s\n{}",
        show(&o)
    );
    assert!(
        t < 6.5,
        "retry-exponential=no: the delay must not double (took {t:.2} s, 1+2+4 = 7)"
    );
    assert_eq!(
        faulty_opens(&stderr(&o)),
        vec![1, 2, 3, 4],
        "the layer below must be reopened once per retry\n{}",
        show(&o)
    );
}

#[test]
fn retry_delay_doubles_by_default() {
    let dir = TempDir::new("retryx");
    let (img, data) = disk(&dir, "disk.img", 62, 1 << 20);
    let o = run_captive(
        &[
            "-v",
            "--filter=retry",
            &filter_arg("faulty"),
            "file",
            &img,
            "fail-first=2",
            "retry-delay=1",
        ],
        &nbdsh(&dir, "r", TIMED_READ),
    );
    let out = ok(&o);
    assert_eq!(value(&out, "result"), "ok", "{}", show(&o));
    assert_eq!(value(&out, "sha"), sha256_hex(&data[..65536]));
    let t = seconds(&out, "elapsed");
    assert!(
        t >= 3.0,
        "exponential delays 1 + 2 s must take ≥ 3 s, took {t:.2} s\n{}",
        show(&o)
    );
    assert_eq!(faulty_opens(&stderr(&o)), vec![1, 2, 3], "{}", show(&o));
}

#[test]
fn retry_gives_up_after_its_retries() {
    let dir = TempDir::new("retry1");
    let (img, _) = disk(&dir, "disk.img", 63, 1 << 20);
    let o = run_captive(
        &[
            "-v",
            "--filter=retry",
            &filter_arg("faulty"),
            "file",
            &img,
            "retries=1",
            "fail-first=3",
            "retry-delay=1",
        ],
        &nbdsh(&dir, "r", TIMED_READ),
    );
    let out = ok(&o);
    assert_eq!(
        value(&out, "result"),
        "EIO",
        "retries=1 with 3 failures: the client gets EIO\n{}",
        show(&o)
    );
    let t = seconds(&out, "elapsed");
    assert!(t >= 1.0, "one retry after 1 s, took {t:.2} s");
    assert!(t < 4.0, "retries=1 must not retry more than once (took {t:.2} s)");
    assert_eq!(faulty_opens(&stderr(&o)), vec![1, 2], "{}", show(&o));
}

#[test]
fn retry_readonly_refuses_writes_after_a_reopen() {
    let dir = TempDir::new("retryro");
    let (img, data) = disk(&dir, "disk.img", 64, 1 << 20);
    let py = r#"
import time
def timed(name, f):
    t = time.monotonic()
    try:
        f()
        r = "ok"
    except nbd.Error as e:
        r = e.errno
    print(name, r, time.monotonic() - t)
timed("write1", lambda: h.pwrite(b"W" * 512, 0))
timed("write2", lambda: h.pwrite(b"W" * 512, 4096))
timed("zero", lambda: h.zero(512, 8192))
timed("trim", lambda: h.trim(512, 8192))
d = h.pread(512, 4096)
print("read", "same" if d != b"W" * 512 else "written")
"#;
    let o = run_captive(
        &[
            "-v",
            "--filter=retry",
            &filter_arg("faulty"),
            "file",
            &img,
            "fail-first=1",
            "retry-delay=1",
            "retry-readonly=yes",
        ],
        &nbdsh(&dir, "ro", py),
    );
    let out = ok(&o);
    let field = |k: &str| -> (String, f64) {
        let v = value(&out, k);
        let mut it = v.split_whitespace();
        (it.next().unwrap().to_owned(), it.next().unwrap().parse().unwrap())
    };
    let (r1, t1) = field("write1");
    assert_eq!(
        r1,
        "EPERM",
        "the write that failed is retried on a read-only reopen: EROFS → EPERM\n{}",
        show(&o)
    );
    assert!(t1 >= 1.0, "write1 waited the retry delay, took {t1:.2} s");
    for k in ["write2", "zero", "trim"] {
        let (r, t) = field(k);
        assert_eq!(
            r,
            "EPERM",
            "{k} after a read-only reopen must fail with EPERM\n{}",
            show(&o)
        );
        assert!(t < 0.5, "{k} after a read-only reopen must fail fast, took {t:.2} s");
    }
    assert_eq!(value(&out, "read"), "same", "reads still work, nothing was written");
    assert_eq!(faulty_opens(&stderr(&o)), vec![1, 2], "{}", show(&o));
    assert!(fs::read(&img).unwrap() == data, "the disk must be unchanged");
}

// ---------------------------------------------------------------------------
// A trapping filter
// ---------------------------------------------------------------------------

#[test]
fn trapping_filter_fails_only_that_request() {
    let dir = TempDir::new("trap");
    let (img, data) = disk(&dir, "disk.img", 65, 1 << 20);
    let fa = filter_arg("faulty");
    let mut srv = Server::start(&[&fa, "file", &img, "trap-offset=4096"]);

    let mut c = RawClient::open(&srv.sock, false, false);
    assert_eq!(c.read(4096, 512), Err(EIO), "a read that traps in a filter gets EIO");
    assert_eq!(
        c.read(0, 512).expect("the next read on the same connection must work"),
        &data[..512]
    );
    assert_eq!(c.read(8192, 4096).unwrap(), &data[8192..12288]);
    assert_eq!(c.write(16384, b"after the trap"), 0);
    c.disconnect();

    let mut c2 = RawClient::open(&srv.sock, false, false);
    assert_eq!(
        c2.read(16384, 14).unwrap(),
        b"after the trap",
        "a new connection sees the data"
    );
    assert_eq!(
        c2.read(4096, 512),
        Err(EIO),
        "it traps again, and again only that request fails"
    );
    assert_eq!(c2.read(512, 512).unwrap(), &data[512..1024]);
    c2.disconnect();
    assert!(
        srv.alive(),
        "the server must survive a trapping filter\n{}",
        srv.stderr()
    );

    let err = srv.stderr();
    let trap_lines: Vec<&str> = err.lines().filter(|l| l.contains("trapped")).collect();
    assert!(!trap_lines.is_empty(), "the trap must be logged:\n{err}");
    assert!(
        trap_lines.iter().all(|l| l.contains("faulty")),
        "the log must name the layer that trapped (faulty):\n{err}"
    );
}

// ---------------------------------------------------------------------------
// readahead
// ---------------------------------------------------------------------------

/// A sparse disk with data scattered through it (nbdkit's test-readahead-copy idea).
fn scattered_disk(dir: &TempDir, name: &str, size: u64) -> (String, Vec<u8>) {
    let path = dir.str(name);
    let f = fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let pieces: [(u64, usize); 6] = [
        (0, 1),
        (1, 4096),
        (1 << 20, 65536 + 7),
        (5 * (1 << 20) + 333, 100_000),
        (size / 2 - 1, 3),
        (size - 512, 512),
    ];
    for (i, (off, len)) in pieces.iter().enumerate() {
        f.write_all_at(&pattern(100 + i as u64, *len), *off).unwrap();
    }
    drop(f);
    (path.clone(), fs::read(&path).unwrap())
}

fn readahead_copies(args: &[&str], fill_from: Option<&str>, want: &[u8], dir: &TempDir) {
    tool("nbdcopy");
    tool("qemu-img");
    let (o1, o2) = (dir.str("nbdcopy.img"), dir.str("qemu.img"));
    let fill = match fill_from {
        Some(src) => format!("nbdcopy -- {} \"$uri\" || exit 3\n", sq(src)),
        None => String::new(),
    };
    let script = format!(
        "{fill}nbdcopy -- \"$uri\" {} || exit 4\nqemu-img convert -f raw -O raw \"$nbd\" {} || exit 5\n",
        sq(&o1),
        sq(&o2)
    );
    let mut all = vec!["--filter=readahead"];
    all.extend_from_slice(args);
    let o = run_captive_timeout(&all, &script, Duration::from_secs(120));
    ok(&o);
    assert!(
        !stderr(&o).contains("won't do anything"),
        "the plugin caches natively: readahead must be active\n{}",
        show(&o)
    );
    assert!(
        fs::read(&o1).unwrap() == want,
        "nbdcopy through readahead changed the data"
    );
    assert!(
        fs::read(&o2).unwrap() == want,
        "qemu-img convert through readahead changed the data"
    );
}

#[test]
fn readahead_copy_is_identical_file() {
    let dir = TempDir::new("racf");
    let (img, want) = scattered_disk(&dir, "src.img", 32 << 20);
    readahead_copies(&["file", &img], None, &want, &dir);
}

#[test]
fn readahead_copy_is_identical_memory() {
    let dir = TempDir::new("racm");
    let (img, want) = scattered_disk(&dir, "src.img", 32 << 20);
    readahead_copies(&["memory", "32M"], Some(&img), &want, &dir);
}

#[test]
fn readahead_prefetches_the_next_window() {
    let dir = TempDir::new("ra");
    let py = r#"
for i in range(10):
    h.pread(512, i * 512)
h.pread(512, 100000)
h.pread(512, 200000)
h.pwrite(b"w" * 512, 0)
h.pread(512, 250000)
"#;
    let o = run_captive(
        &[
            "-v",
            "--filter=readahead",
            &filter_arg("recorder"),
            "memory",
            "1M",
            "recorder=below",
        ],
        &nbdsh(&dir, "ra", py),
    );
    ok(&o);
    let got: Vec<String> = recorded(&stderr(&o))
        .into_iter()
        .filter(|c| c.starts_with("below: pread") || c.starts_with("below: cache") || c.starts_with("below: pwrite"))
        .collect();
    let mut want = Vec::new();
    for i in 0..10u64 {
        want.push(format!("below: pread count=512 offset={}", i * 512));
        // Sequential reads keep the minimum window.
        want.push(format!("below: cache count=32768 offset={}", i * 512 + 512));
    }
    // A read past the end of the previous prefetch doubles the window.
    want.push("below: pread count=512 offset=100000".into());
    want.push("below: cache count=65536 offset=100512".into());
    want.push("below: pread count=512 offset=200000".into());
    want.push("below: cache count=131072 offset=200512".into());
    // A write starts the window over.
    want.push("below: pwrite count=512 offset=0".into());
    want.push("below: pread count=512 offset=250000".into());
    want.push("below: cache count=32768 offset=250512".into());
    assert_eq!(got, want, "{}", show(&o));
}

// ---------------------------------------------------------------------------
// exitlast
// ---------------------------------------------------------------------------

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
        show(&info)
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
    assert!(info.status.success(), "{}", show(&info));
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
    ok(&o);
    assert!(
        exits_within(&mut srv, Duration::from_secs(10)),
        "nbdinfo --list (OPT_INFO) must make exitlast exit, as nbdkit"
    );
    assert!(srv.stop().success());
}

// ---------------------------------------------------------------------------
// Thread model, command-line errors
// ---------------------------------------------------------------------------

#[test]
fn dump_plugin_thread_model_includes_filters() {
    let plain = ok(&nbdbox(&["--dump-plugin", "memory", "1M"]));
    assert!(plain.lines().any(|l| l == "thread_model=parallel"), "{plain}");
    let out = ok(&nbdbox(&["--dump-plugin", "--filter=retry", "memory", "1M"]));
    assert!(out.lines().any(|l| l == "name=memory"), "plugin fields only:\n{out}");
    assert!(out.lines().any(|l| l == "max_thread_model=parallel"), "{out}");
    assert!(
        out.lines().any(|l| l == "thread_model=serialize_requests"),
        "retry forces serialize_requests:\n{out}"
    );
}

#[test]
fn unknown_filter_name_is_refused() {
    let o = nbdbox(&["-U", "-", "--filter=nosuchfilter", "memory", "1M", "--run", "true"]);
    assert_exit1(&o);
    assert!(stderr(&o).contains("nosuchfilter"), "{}", show(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn plugin_given_as_filter_is_refused() {
    let o = nbdbox(&["-U", "-", "--filter=memory", "memory", "1M", "--run", "true"]);
    assert_exit1(&o);
    let e = stderr(&o);
    assert!(e.contains("'memory'") && e.contains("filter"), "{}", show(&o));
    for plugin in ["escape", "hostile"] {
        let path = guest_str(plugin);
        let o = nbdbox(&["-U", "-", &format!("--filter={path}"), "memory", "1M", "--run", "true"]);
        assert_exit1(&o);
        let e = stderr(&o);
        assert!(
            e.contains(&path) && e.contains("is a plugin, not a filter"),
            "{}",
            show(&o)
        );
    }
}

#[test]
fn filter_given_as_plugin_is_refused() {
    let path = guest_str("recorder");
    let o = nbdbox(&["-U", "-", &path, "--run", "true"]);
    assert_exit1(&o);
    let e = stderr(&o);
    assert!(e.contains(&path) && e.contains("is a filter"), "{}", show(&o));
    assert!(e.contains("--filter="), "the message should say how to use it: {e}");
    assert!(Path::new(&path).is_file());
}
