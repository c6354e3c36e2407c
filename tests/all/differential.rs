//! More differential checks against Debian's nbdkit 1.32.5 (beside support::compare), for the
//! synthetic plugins and the debugging filters: nbdinfo and map scripts, refusals, nbdsh
//! snippets that report each call's outcome, and foreground servers (which never fork).

use crate::support::*;

/// What `nbdinfo` shows of an export (size, contexts, every can_* flag, block sizes), less
/// the `uri:` line, which names the server's own socket.
pub const NBDINFO: &str = "nbdinfo \"$uri\" | grep -v '^[[:space:]]*uri: '";

/// `nbdinfo --map`: the base:allocation extents of the whole export.
pub const MAP: &str = "nbdinfo --map \"$uri\"";

/// Both servers refuse the command line (exit status 1, nothing served).
#[track_caller]
pub fn both_refuse(args: &[&str]) {
    let (ours, theirs) = (run_captive(args, "echo SERVED"), nbdkit_captive(args, "echo SERVED"));
    assert_exit1(&ours);
    assert_exit1(&theirs);
    assert!(!stdout(&ours).contains("SERVED") && !stdout(&theirs).contains("SERVED"));
}

/// A shell command running a Python snippet with nbdsh on a handle `h` that is connected to
/// `$uri` in non-strict mode, so that requests libnbd would refuse itself reach the server
/// and the errors printed are the server's. The snippet is stored in `dir`.
pub fn nbdsh_loose(dir: &TempDir, name: &str, py: &str) -> String {
    let script = format!(
        "import os\nh.set_strict_mode(0)\nh.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)\n\
         h.connect_uri(os.environ['uri'])\n{OUTCOME}\n{py}"
    );
    let f = dir.join(&format!("{name}.py"));
    std::fs::write(&f, script).unwrap();
    format!(
        "uri=\"$uri\" {} -c \"$(cat {})\"",
        tool("/usr/bin/nbdsh").display(),
        shell_quote(f.to_str().unwrap())
    )
}

/// `outcome(label, call)` in nbdsh snippets: runs `call` and prints `label` with `ok` (and the
/// bytes read, as hex up to 64 bytes, else their length and SHA-256) or the errno's name.
const OUTCOME: &str = r#"
import errno, hashlib
def outcome(label, call):
    try:
        r = call()
    except nbd.Error as e:
        print(label, errno.errorcode.get(e.errnum, e.errnum))
        return
    if isinstance(r, (bytes, bytearray)):
        shown = r.hex() if len(r) <= 64 else "%d:%s" % (len(r), hashlib.sha256(r).hexdigest())
        print(label, "ok", shown)
    else:
        print(label, "ok")
"#;

/// `nbdbox -f OURS...` and `nbdkit -f THEIRS...` (foreground, each on a Unix socket of its
/// own; the arguments differ only where each server needs a file of its own), `script` run
/// against each with `$uri` set, then each server stopped with SIGTERM. Foreground servers
/// never fork, so nothing of nbdkit's differs for that reason. Returns what the scripts
/// printed, ours first; the servers must exit cleanly.
pub fn foreground(ours: &[&str], theirs: &[&str], script: &str) -> (String, String) {
    let args = theirs;
    let ours = Server::start(ours);
    let our_out = run_script(&ours.uri(), script);
    assert!(ours.stop().success(), "nbdbox did not exit cleanly");

    let dir = TempDir::new("nbdkitfg");
    let sock = dir.join("sock");
    let pidfile = dir.join("pid");
    let mut child = std::process::Command::new(tool("nbdkit"))
        .arg("-f")
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env("PATH", child_path())
        .spawn()
        .expect("cannot start nbdkit");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
        assert!(std::time::Instant::now() < deadline, "nbdkit did not start: {args:?}");
        assert!(child.try_wait().unwrap().is_none(), "nbdkit exited at start: {args:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let their_out = run_script(&format!("nbd+unix://?socket={}", sock.display()), script);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "nbdkit did not exit cleanly");
    (our_out, their_out)
}

/// `script` under /bin/sh with the shell variable `uri` set; it must succeed.
fn run_script(uri: &str, script: &str) -> String {
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c").arg(format!("uri={}\n{script}", shell_quote(uri)));
    assert_success(&run_with_timeout(c, DEFAULT_TIMEOUT))
}
