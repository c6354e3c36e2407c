//! The built-in `retry` filter: after a failed request it reopens the layer below and
//! retries after a delay (fixed, or doubling by default), gives up after `retries`, and with
//! `retry-readonly` reopens read-only so that writes then fail at once.
//!
//! The test-only `faulty` filter below it fails the first reads (`fail-first=N`) and logs
//! every open (`faulty: open #N`, visible with `-v`).

use crate::support::*;
use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

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
    let out = assert_success(&o);
    assert_eq!(
        value(&out, "result"),
        "ok",
        "the read must succeed after 3 retries\n{}",
        describe(&o)
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
        describe(&o)
    );
    assert!(
        t < 6.5,
        "retry-exponential=no: the delay must not double (took {t:.2} s, 1+2+4 = 7)"
    );
    assert_eq!(
        faulty_opens(&stderr(&o)),
        vec![1, 2, 3, 4],
        "the layer below must be reopened once per retry\n{}",
        describe(&o)
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
    let out = assert_success(&o);
    assert_eq!(value(&out, "result"), "ok", "{}", describe(&o));
    assert_eq!(value(&out, "sha"), sha256_hex(&data[..65536]));
    let t = seconds(&out, "elapsed");
    assert!(
        t >= 3.0,
        "exponential delays 1 + 2 s must take ≥ 3 s, took {t:.2} s\n{}",
        describe(&o)
    );
    assert_eq!(faulty_opens(&stderr(&o)), vec![1, 2, 3], "{}", describe(&o));
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
    let out = assert_success(&o);
    assert_eq!(
        value(&out, "result"),
        "EIO",
        "retries=1 with 3 failures: the client gets EIO\n{}",
        describe(&o)
    );
    let t = seconds(&out, "elapsed");
    assert!(t >= 1.0, "one retry after 1 s, took {t:.2} s");
    assert!(t < 4.0, "retries=1 must not retry more than once (took {t:.2} s)");
    assert_eq!(faulty_opens(&stderr(&o)), vec![1, 2], "{}", describe(&o));
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
    let out = assert_success(&o);
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
        describe(&o)
    );
    assert!(t1 >= 1.0, "write1 waited the retry delay, took {t1:.2} s");
    for k in ["write2", "zero", "trim"] {
        let (r, t) = field(k);
        assert_eq!(
            r,
            "EPERM",
            "{k} after a read-only reopen must fail with EPERM\n{}",
            describe(&o)
        );
        assert!(t < 0.5, "{k} after a read-only reopen must fail fast, took {t:.2} s");
    }
    assert_eq!(value(&out, "read"), "same", "reads still work, nothing was written");
    assert_eq!(faulty_opens(&stderr(&o)), vec![1, 2], "{}", describe(&o));
    assert!(fs::read(&img).unwrap() == data, "the disk must be unchanged");
}
