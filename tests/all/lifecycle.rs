//! Process lifecycle outside captive mode: daemonizing, the pid file, signals,
//! stale and live Unix sockets, idle clients at shutdown, --exit-with-parent,
//! socket activation and `-s`.

use crate::support::nbd::*;
use crate::support::*;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

// --------------------------------------------------------------------------
// Helpers
// --------------------------------------------------------------------------

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Wait until no live process has `pid` (a zombie counts as gone).
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for a complete pid file (`PID\n`) and return the pid.
#[track_caller]
fn wait_pidfile(path: &Path, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad pid file content {s:?}"));
            }
        }
        assert!(
            Instant::now() < deadline,
            "no pid file {} after {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs a process this test started if it is still running at the end
/// (only reached when an assertion failed first).
struct PidGuard(u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if pid_alive(self.0) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
}

fn uri_of(sock: &Path) -> String {
    format!("nbd+unix://?socket={}", sock.display())
}

/// `nbdinfo --size` against a Unix socket.
#[track_caller]
fn size_via_nbdinfo(sock: &Path) -> String {
    let mut c = Command::new(tool("nbdinfo"));
    c.arg("--size").arg(uri_of(sock));
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert_success(&o).trim().to_owned()
}

/// A foreground nbdbox (`-f -P DIR/pid ARGS...`), ready once its pid file
/// exists; stderr goes to DIR/stderr.log.
struct Fg {
    child: Child,
    pid: u32,
    pidfile: PathBuf,
    log: PathBuf,
}

impl Fg {
    fn start(dir: &TempDir, args: &[&str]) -> Fg {
        let pidfile = dir.join("pid");
        let log = dir.join("stderr.log");
        let mut child = Command::new(bin())
            .arg("-f")
            .arg("-P")
            .arg(&pidfile)
            .args(args)
            .env("PATH", child_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "nbdbox {args:?} exited early with {st:?}\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nbdbox {args:?}: no pid file after 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = wait_pidfile(&pidfile, Duration::from_secs(1));
        Fg {
            child,
            pid,
            pidfile,
            log,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send `sig` and wait up to `timeout` for the exit status.
    fn signal_and_wait(&mut self, sig: &str, timeout: Duration) -> ExitStatus {
        signal(self.child.id(), sig);
        match wait_child(&mut self.child, timeout) {
            Some(st) => st,
            None => panic!("nbdbox still running {timeout:?} after SIG{sig}\n{}", self.stderr()),
        }
    }
}

impl Drop for Fg {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[track_caller]
fn assert_clean_exit(st: ExitStatus, what: &str, log: &str) {
    assert_eq!(st.signal(), None, "{what}: killed by a signal\n{log}");
    assert_eq!(st.code(), Some(0), "{what}: exit status\n{log}");
}

// --------------------------------------------------------------------------
// Daemon mode and the pid file
// --------------------------------------------------------------------------

#[test]
fn daemon_mode() {
    let dir = TempDir::new("ldm");
    let sock = dir.join("sock");
    let pidfile = dir.join("pid");
    let mut c = Command::new(bin());
    c.arg("-P").arg(&pidfile).arg("-U").arg(&sock).args(["memory", "1M"]);
    let t = Instant::now();
    // Piped stdout/stderr: run_with_timeout also fails if the daemon keeps
    // them open (it must move its stdio to /dev/null).
    let o = run_with_timeout(c, Duration::from_secs(30));
    let parent_took = t.elapsed();
    assert!(o.status.success(), "the parent must exit 0\n{}", describe(&o));
    assert!(
        parent_took < Duration::from_secs(10),
        "the parent took {parent_took:?} to exit"
    );
    let pid = wait_pidfile(&pidfile, Duration::from_secs(10));
    let _guard = PidGuard(pid);
    assert!(pid_alive(pid), "daemon {pid} from the pid file is not running");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/"),
        "the daemon should chdir to /"
    );
    assert!(sock.exists(), "socket missing");

    assert_eq!(size_via_nbdinfo(&sock), "1048576");
    assert_eq!(size_via_nbdinfo(&sock), "1048576", "serves more than once");

    signal(pid, "TERM");
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "daemon still running 10 s after SIGTERM"
    );
    assert!(!pidfile.exists(), "pid file left behind");
    assert!(!sock.exists(), "socket left behind");
}

#[test]
fn daemon_pidfile_holds_the_serving_process() {
    // Start from a shell that records $! (the process it started): the pid
    // file must name a different, live process (the forked daemon).
    let dir = TempDir::new("ldp");
    let sock = dir.join("sock");
    let pidfile = dir.join("pid");
    let started = dir.join("started");
    // Relative -P and -U paths are relative to where nbdbox was started,
    // although the daemon moves to /.
    let script = format!(
        "cd {} || exit 9; {} -P pid -U sock memory 1M & echo $! > {}; wait",
        shell_quote(dir.path.to_str().unwrap()),
        shell_quote(bin().to_str().unwrap()),
        shell_quote(started.to_str().unwrap())
    );
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(&script);
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert_success(&o);
    let pid = wait_pidfile(&pidfile, Duration::from_secs(10));
    let _guard = PidGuard(pid);
    let first: u32 = fs::read_to_string(&started).unwrap().trim().parse().unwrap();
    assert_ne!(pid, first, "the pid file holds the parent that exited");
    assert!(!pid_alive(first), "the foreground parent is still running");
    assert!(pid_alive(pid));
    assert_eq!(size_via_nbdinfo(&sock), "1048576");
    signal(pid, "TERM");
    assert!(wait_gone(pid, Duration::from_secs(10)));
    assert!(!pidfile.exists() && !sock.exists());
}

// --------------------------------------------------------------------------
// Signals
// --------------------------------------------------------------------------

#[test]
fn foreground_graceful_signals() {
    for sig in ["TERM", "INT", "HUP", "QUIT"] {
        let dir = TempDir::new("lsg");
        let sock = dir.join("sock");
        let mut fg = Fg::start(&dir, &["-U", sock.to_str().unwrap(), "memory", "1M"]);
        assert_eq!(fg.pid, fg.child.id(), "-f: pid file holds the process itself");
        assert_eq!(size_via_nbdinfo(&sock), "1048576");
        let st = fg.signal_and_wait(sig, Duration::from_secs(10));
        assert_clean_exit(st, &format!("SIG{sig}"), &fg.stderr());
        assert!(!fg.pidfile.exists(), "SIG{sig}: pid file left behind");
        assert!(!sock.exists(), "SIG{sig}: socket left behind");
    }
}

#[test]
fn fatal_signal_is_not_graceful() {
    // Signals other than INT/QUIT/TERM/HUP keep their default action.
    let dir = TempDir::new("lfs");
    let sock = dir.join("sock");
    let mut fg = Fg::start(&dir, &["-U", sock.to_str().unwrap(), "memory", "1M"]);
    let st = fg.signal_and_wait("USR1", Duration::from_secs(10));
    assert_eq!(st.signal(), Some(10), "SIGUSR1 should kill nbdbox: {st:?}");
}

#[test]
fn sigpipe_is_ignored() {
    // A client that vanishes mid-reply must not kill the server.
    let dir = TempDir::new("lsp");
    let sock = dir.join("sock");
    let mut fg = Fg::start(&dir, &["-U", sock.to_str().unwrap(), "memory", "64M"]);
    for _ in 0..3 {
        let mut c = RawClient::open(&sock, false, false);
        // A large read, then hang up without reading the reply.
        c.send_request(0, CMD_READ, 0, 32 << 20, &[]);
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        fg.child.try_wait().unwrap().is_none(),
        "nbdbox died when clients hung up mid-reply\n{}",
        fg.stderr()
    );
    assert_eq!(size_via_nbdinfo(&sock), "67108864");
    let st = fg.signal_and_wait("TERM", Duration::from_secs(10));
    assert_clean_exit(st, "SIGTERM", &fg.stderr());
}

#[test]
fn sigterm_with_idle_clients() {
    let dir = TempDir::new("lic");
    let sock = dir.join("sock");
    let mut fg = Fg::start(&dir, &["-U", sock.to_str().unwrap(), "memory", "1M"]);
    // One client in transmission, one that stopped after the greeting.
    let mut ready = RawClient::open(&sock, true, false);
    assert_eq!(ready.read(0, 512).unwrap(), vec![0u8; 512]);
    let mut greeted = RawClient::connect(&sock);
    let t = Instant::now();
    let st = fg.signal_and_wait("TERM", Duration::from_secs(10));
    let took = t.elapsed();
    assert_clean_exit(st, "SIGTERM with idle clients", &fg.stderr());
    assert!(
        took < Duration::from_secs(6),
        "idle clients held the shutdown for {took:?}"
    );
    assert!(
        ready.closed_within(Duration::from_secs(2)),
        "idle client not disconnected"
    );
    assert!(
        greeted.closed_within(Duration::from_secs(2)),
        "handshaking client not disconnected"
    );
    assert!(!fg.pidfile.exists(), "pid file left behind");
    assert!(!sock.exists(), "socket left behind");
}

// --------------------------------------------------------------------------
// Unix socket files
// --------------------------------------------------------------------------

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new("lst");
    let sock = dir.join("sock");
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists(), "the stale socket file should remain");
    let mut fg = Fg::start(&dir, &["-U", sock.to_str().unwrap(), "memory", "1M"]);
    assert_eq!(size_via_nbdinfo(&sock), "1048576");
    let st = fg.signal_and_wait("TERM", Duration::from_secs(10));
    assert_clean_exit(st, "SIGTERM", &fg.stderr());
    assert!(!sock.exists(), "socket left behind");

    // The stale socket of a SIGKILLed nbdbox does not stop the next start.
    let dir = TempDir::new("lst2");
    let mut fg = Fg::start(&dir, &["-U", sock.to_str().unwrap(), "memory", "1M"]);
    let st = fg.signal_and_wait("KILL", Duration::from_secs(10));
    assert_eq!(st.signal(), Some(9));
    assert!(sock.exists(), "a SIGKILLed server cannot remove its socket");
    // A new directory: the killed server's pid file must not pass for the next one's.
    let dir = TempDir::new("lst3");
    let mut fg = Fg::start(&dir, &["-U", sock.to_str().unwrap(), "memory", "2M"]);
    assert_eq!(size_via_nbdinfo(&sock), "2097152");
    let st = fg.signal_and_wait("TERM", Duration::from_secs(10));
    assert_clean_exit(st, "SIGTERM", &fg.stderr());
}

#[test]
fn live_socket_or_other_file_is_not_taken() {
    let dir = TempDir::new("llv");
    let live = dir.join("live");
    let listener = UnixListener::bind(&live).unwrap();
    let mut c = Command::new(bin());
    c.args(["-f", "-U", live.to_str().unwrap(), "memory", "1M"]);
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert_exit1(&o);
    assert!(live.exists(), "a live socket must not be removed");
    listener.set_nonblocking(true).unwrap();
    let _conn = UnixStream::connect(&live).expect("the live socket still works");
    assert!(
        listener.accept().is_ok(),
        "the original listener must still own the path"
    );

    let file = dir.join("file");
    fs::write(&file, "data").unwrap();
    let mut c = Command::new(bin());
    c.args(["-f", "-U", file.to_str().unwrap(), "memory", "1M"]);
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert_exit1(&o);
    assert_eq!(fs::read_to_string(&file).unwrap(), "data");
}

// --------------------------------------------------------------------------
// --exit-with-parent
// --------------------------------------------------------------------------

/// `sh -c 'nbdbox OPTS -P pid -U sock memory 1M & echo $! > child; exec sleep 60'`:
/// returns the shell (the server's parent), the server's pid and the socket.
fn start_under_shell(dir: &TempDir, opts: &str) -> (Child, u32, PathBuf, PathBuf) {
    let sock = dir.join("sock");
    let pidfile = dir.join("pid");
    let childfile = dir.join("child");
    let script = format!(
        "{} {opts} -P {} -U {} memory 1M </dev/null >/dev/null 2>{} & echo $! > {}; exec sleep 60",
        shell_quote(bin().to_str().unwrap()),
        shell_quote(pidfile.to_str().unwrap()),
        shell_quote(sock.to_str().unwrap()),
        shell_quote(dir.str("stderr.log").as_str()),
        shell_quote(childfile.to_str().unwrap()),
    );
    let sh = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = wait_pidfile(&pidfile, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    let started: u32 = loop {
        if let Some(p) = fs::read_to_string(&childfile).ok().and_then(|s| s.trim().parse().ok()) {
            break p;
        }
        assert!(Instant::now() < deadline, "the shell did not record $!");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        pid, started,
        "foreground server: the pid file must hold the process the shell started"
    );
    (sh, pid, sock, pidfile)
}

#[test]
fn exit_with_parent() {
    let dir = TempDir::new("lewp");
    let (mut sh, pid, sock, pidfile) = start_under_shell(&dir, "--exit-with-parent");
    let _guard = PidGuard(pid);
    assert_eq!(size_via_nbdinfo(&sock), "1048576");
    sh.kill().unwrap();
    sh.wait().unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "--exit-with-parent: nbdbox still running 10 s after its parent was SIGKILLed"
    );
    // Parent death is delivered as SIGTERM: the normal clean-up ran.
    assert!(!pidfile.exists(), "pid file left behind");
    assert!(!sock.exists(), "socket left behind");
}

#[test]
fn without_exit_with_parent_server_survives_parent() {
    let dir = TempDir::new("lnwp");
    let (mut sh, pid, sock, pidfile) = start_under_shell(&dir, "-f");
    let _guard = PidGuard(pid);
    sh.kill().unwrap();
    sh.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pid_alive(pid),
        "-f nbdbox without --exit-with-parent died with its parent\n{}",
        fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
    );
    assert_eq!(size_via_nbdinfo(&sock), "1048576");
    signal(pid, "TERM");
    assert!(wait_gone(pid, Duration::from_secs(10)));
    assert!(!pidfile.exists() && !sock.exists());
}

// --------------------------------------------------------------------------
// Socket activation
// --------------------------------------------------------------------------

/// Python activator: binds and listens on argv[1], then (argv[2] == "fork")
/// forks a child or (else) becomes the server itself, with the socket on fd 3,
/// LISTEN_FDS=1 and LISTEN_PID = the server's pid, and execs argv[3:].
const ACTIVATOR: &str = r#"
import os, socket, sys
path, mode, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
def become_server():
    if s.fileno() != 3:
        os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(argv[0], argv)
if mode != "fork":
    become_server()
pid = os.fork()
if pid == 0:
    become_server()
s.close()
with open(path + ".child", "w") as f:
    f.write("%d\n" % pid)
_, st = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(st)
sys.exit(code if code >= 0 else 128 - code)
"#;

fn activator(sock: &Path, mode: &str, args: &[&str]) -> Command {
    let mut c = Command::new(tool("/usr/bin/python3"));
    c.arg("-c")
        .arg(ACTIVATOR)
        .arg(sock)
        .arg(mode)
        .arg(bin())
        .args(args)
        .env("PATH", child_path())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    c
}

#[test]
fn socket_activation() {
    let dir = TempDir::new("lsa");
    let sock = dir.join("sock");
    let pidfile = dir.join("pid");
    // No -f: an activated server never daemonizes (the activator watches its child).
    let mut py = activator(&sock, "fork", &["-P", pidfile.to_str().unwrap(), "memory", "1M"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = wait_pidfile(&pidfile, Duration::from_secs(30));
    let _guard = PidGuard(pid);
    let child: u32 = fs::read_to_string(dir.join("sock.child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        pid, child,
        "the pid file must hold the activated process itself (no daemonizing)"
    );
    assert_eq!(size_via_nbdinfo(&sock), "1048576");
    assert_eq!(size_via_nbdinfo(&sock), "1048576", "keeps accepting");
    signal(pid, "TERM");
    let st = wait_child(&mut py, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("activated nbdbox still running 10 s after SIGTERM"));
    assert_eq!(
        st.code(),
        Some(0),
        "activated nbdbox exit status\n{}",
        fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
    );
    assert!(!pidfile.exists(), "pid file left behind");
}

#[test]
fn socket_activation_rejects_other_endpoints() {
    let dir = TempDir::new("lsx");
    let marker = dir.join("ran");
    let port = free_port().to_string();
    let run = format!("touch {}", shell_quote(marker.to_str().unwrap()));
    let other = dir.str("other");
    let cases: [&[&str]; 4] = [
        &["-U", &other, "memory", "1M"],
        &["-p", &port, "memory", "1M"],
        &["-i", "127.0.0.1", "memory", "1M"],
        &["--run", &run, "memory", "1M"],
    ];
    for (i, args) in cases.iter().enumerate() {
        let sock = dir.join(&format!("s{i}"));
        let o = run_with_timeout(activator(&sock, "exec", args), Duration::from_secs(30));
        assert_exit1(&o);
        assert!(!marker.exists(), "{args:?}: the --run command ran\n{}", describe(&o));
        assert!(!Path::new(&other).exists(), "{args:?}: bound -U anyway");
    }
}

#[test]
fn socket_activation_by_libnbd() {
    // nbdinfo's `[ CMD ]` starts the server with systemd socket activation
    // and terminates it when done: nothing may be left running.
    let dir = TempDir::new("lsl");
    let pidfile = dir.join("pid");
    let mut c = Command::new(tool("nbdinfo"));
    c.args(["--size", "--", "["])
        .arg(bin())
        .arg("-P")
        .arg(&pidfile)
        .args(["memory", "1M", "]"]);
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert_eq!(assert_success(&o).trim(), "1048576", "{}", describe(&o));
    // Gone within 10 s: either its pid file is removed or the pid it names is dead.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        match pid {
            Some(pid) if pid_alive(pid) => {
                if Instant::now() >= deadline {
                    let _guard = PidGuard(pid);
                    panic!("nbdbox {pid} still running 10 s after nbdinfo [ ... ] finished");
                }
            }
            _ => break,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pidfile.exists(), "pid file left behind");
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    let nbdinfo = tool("nbdinfo");
    let mut c = Command::new(bin());
    c.args(["-U", "-", "memory", "1M", "--run"])
        .arg(format!("{} --size \"$uri\"", nbdinfo.display()))
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert_eq!(assert_success(&o).trim(), "1048576");
}

// --------------------------------------------------------------------------
// -s: one connection on stdin/stdout
// --------------------------------------------------------------------------

#[test]
fn single_with_nbdsh_connect_command() {
    let nbdsh = tool("/usr/bin/nbdsh");
    let mut c = Command::new(nbdsh);
    c.arg("-c")
        .arg(format!(
            "h.connect_command([{:?}, '-s', 'memory', '1M'])",
            bin().to_str().unwrap()
        ))
        .arg("-c")
        .arg("print(h.get_size())")
        .arg("-c")
        .arg("h.pwrite(b'hello', 4096); assert h.pread(5, 4096) == b'hello'; print('RW-OK')")
        .arg("-c")
        .arg("h.shutdown()");
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    let out = assert_success(&o);
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines, ["1048576", "RW-OK"], "{}", describe(&o));
}

#[test]
fn single_exits_0_when_the_connection_ends() {
    for abort in [true, false] {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let stdin = OwnedFd::from(theirs.try_clone().unwrap());
        let stdout = OwnedFd::from(theirs);
        let dir = TempDir::new("lss");
        let mut child = Command::new(bin())
            .args(["-s", "memory", "1M"])
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut s = mine;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).expect("greeting on stdout");
        assert_eq!(u64::from_be_bytes(greeting[..8].try_into().unwrap()), NBDMAGIC);
        assert_eq!(u64::from_be_bytes(greeting[8..16].try_into().unwrap()), IHAVEOPT);
        s.write_all(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes())
            .unwrap();
        if abort {
            let mut opt = Vec::new();
            opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
            opt.extend_from_slice(&OPT_ABORT.to_be_bytes());
            opt.extend_from_slice(&0u32.to_be_bytes());
            s.write_all(&opt).unwrap();
        }
        drop(s);
        let st = wait_child(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("-s: still running 10 s after the client went away (abort={abort})")
        });
        assert_clean_exit(
            st,
            &format!("-s (abort={abort})"),
            &fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
        );
    }
}

#[test]
fn single_rejects_run_and_listeners() {
    for args in [
        &["-s", "--run", "true", "memory", "1M"][..],
        &["-s", "-U", "-", "memory", "1M"],
        &["-s", "-p", "10809", "memory", "1M"],
    ] {
        let o = nbdbox(args);
        assert_exit1(&o);
    }
}
