//! Running the binary and other programs with a deadline (whole process groups, killed on
//! timeout), captive `--run` runs, and helpers to read and check what they printed.

use super::tools::{bin, child_path};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Kill a whole process group (we start every child as a group leader).
pub(super) fn kill_group(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Run `cmd` (stdin closed, stdout/stderr captured) and panic if it takes
/// longer than `timeout`; on timeout the whole process group is killed.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PATH", child_path())
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    let out_rx = reader(child.stdout.take().unwrap());
    let err_rx = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            kill_group(child.id(), "-KILL");
            let _ = child.kill();
            let _ = child.wait();
            let out = out_rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            let err = err_rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            panic!(
                "TIMEOUT after {timeout:?}: {desc}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    // A leftover grandchild (e.g. a server that outlived its captive command)
    // would keep the pipes open: don't wait for it forever.
    let grace = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(5));
    let stdout = out_rx.recv_timeout(grace);
    let stderr = err_rx.recv_timeout(Duration::from_secs(5));
    if stdout.is_err() || stderr.is_err() {
        kill_group(child.id(), "-KILL");
        panic!("{desc} exited ({status:?}) but something it started still holds its stdout/stderr open");
    }
    Output {
        status,
        stdout: stdout.unwrap(),
        stderr: stderr.unwrap(),
    }
}

/// `nbdbox ARGS...` with the default deadline.
pub fn nbdbox(args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args);
    run_with_timeout(c, DEFAULT_TIMEOUT)
}

/// `nbdbox -U - --run SCRIPT ARGS...` (captive mode, private Unix socket).
pub fn run_captive(args: &[&str], script: &str) -> Output {
    run_captive_timeout(args, script, DEFAULT_TIMEOUT)
}

pub fn run_captive_timeout(args: &[&str], script: &str, timeout: Duration) -> Output {
    let mut c = Command::new(bin());
    c.args(["-U", "-", "--run", script]).args(args);
    run_with_timeout(c, timeout)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Pretty dump for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Assert success and return stdout.
#[track_caller]
pub fn assert_success(o: &Output) -> String {
    assert!(o.status.success(), "command failed\n{}", describe(o));
    stdout(o)
}

/// Assert a clean failure with exit status 1 (never a signal).
#[track_caller]
pub fn assert_exit1(o: &Output) {
    assert_eq!(o.status.signal(), None, "killed by a signal\n{}", describe(o));
    assert_eq!(o.status.code(), Some(1), "expected exit status 1\n{}", describe(o));
}

/// Shell-quote a string for `/bin/sh` (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `key value` lines printed by a client script.
pub fn value(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no `{key}` line in client output:\n{out}"))
        .trim()
        .to_owned()
}

/// The calls the test-only `recorder` filters logged (with `-v`), in order, as `NAME: CALL`.
pub fn recorded(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.rfind("recorder ").map(|i| l[i + "recorder ".len()..].to_owned()))
        .collect()
}
