//! Captive mode (`--run CMD`): the exact text of the shell variables for every
//! listening mode, that they are shell variables only, real clients consuming
//! them, exit statuses, and that nothing outlives the run (private socket
//! directory, pid file, server process).

use crate::support::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The variable names nbdbox sets for the command.
const VARS: [&str; 5] = ["uri", "nbd", "port", "unixsocket", "exportname"];

/// A command that prints every variable as `NAME=[VALUE]` (brackets make
/// empty values and trailing spaces visible).
fn print_vars() -> String {
    VARS.iter()
        .map(|v| format!("printf '%s\\n' \"{v}=[${v}]\""))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value printed by `print_vars` (without the brackets).
#[track_caller]
fn var(out: &str, key: &str) -> String {
    let p = format!("{key}=[");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&p))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{out}"));
    line.strip_suffix(']')
        .unwrap_or_else(|| panic!("{key}: unterminated value {line:?}"))
        .to_owned()
}

/// `nbdbox ARGS... --run SCRIPT` with a clean environment for the variable
/// names (an inherited `uri` would be exported by the shell).
fn captive(args: &[&str], script: &str) -> Output {
    let mut c = Command::new(bin());
    c.args(args).arg("--run").arg(script);
    for v in VARS {
        c.env_remove(v);
    }
    run_with_timeout(c, DEFAULT_TIMEOUT)
}

/// Run on a fresh TCP port on 127.0.0.1; retried once if the port was taken
/// in the meantime. Returns the port and the output.
fn captive_tcp(args: &[&str], script: &str) -> (String, Output) {
    let mut last = None;
    for _ in 0..3 {
        let port = free_port().to_string();
        let mut all = vec!["-i", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        let o = captive(&all, script);
        if o.status.code() == Some(1) && stderr(&o).contains("bind") {
            last = Some(o);
            continue;
        }
        return (port, o);
    }
    panic!("could not bind a free TCP port 3 times\n{}", describe(&last.unwrap()));
}

/// The private `-U -` socket must be DIR/socket with DIR directly in /tmp.
#[track_caller]
fn check_private_socket_path(sock: &str) -> PathBuf {
    let p = Path::new(sock);
    assert_eq!(p.file_name().unwrap(), "socket", "-U - socket name: {sock}");
    let dir = p.parent().unwrap();
    assert_eq!(dir.parent(), Some(Path::new("/tmp")), "-U - lives in /tmp: {sock}");
    dir.to_path_buf()
}

/// The private directory (and socket) of a finished run are gone.
#[track_caller]
fn assert_private_dir_removed(sock: &str) {
    let dir = check_private_socket_path(sock);
    assert!(!Path::new(sock).exists(), "socket left behind: {sock}");
    assert!(!dir.exists(), "-U - directory left behind: {}", dir.display());
}

/// Processes whose command line mentions `needle` (a unique temp path).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// Empty `/tmp/nbd*` directories: what a leaked `-U -` directory looks like.
fn empty_private_dirs() -> Vec<PathBuf> {
    let prefix = if prog_name().contains("nbdkit") {
        "nbdkit"
    } else {
        "nbdbox"
    };
    let mut v: Vec<PathBuf> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p.is_dir() && fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false))
        .collect();
    v.sort();
    v
}

/// Empty private directories that appeared during `f` and are still there a
/// moment later (a concurrent test's directory fills or vanishes quickly).
fn leaked_private_dirs(f: impl FnOnce()) -> Vec<PathBuf> {
    let before = empty_private_dirs();
    f();
    let new: Vec<_> = empty_private_dirs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if new.is_empty() {
        return new;
    }
    std::thread::sleep(Duration::from_secs(2));
    let still = empty_private_dirs();
    new.into_iter().filter(|p| still.contains(p)).collect()
}

// --------------------------------------------------------------------------
// Exact variable text
// --------------------------------------------------------------------------

#[test]
fn variables_private_unix_socket() {
    let o = captive(&["-U", "-", "memory", "1M"], &print_vars());
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    check_private_socket_path(&sock);
    assert_eq!(var(&out, "uri"), format!("nbd+unix://?socket={sock}"));
    assert_eq!(var(&out, "nbd"), format!("nbd:unix:{sock}"));
    assert_eq!(var(&out, "port"), "");
    assert_eq!(var(&out, "exportname"), "");
    assert_private_dir_removed(&sock);

    // The word guestfish anywhere in the command selects the nbd:// form.
    let o = captive(
        &["-U", "-", "memory", "1M"],
        &format!("{}; : not really guestfish", print_vars()),
    );
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    assert_eq!(var(&out, "nbd"), format!("nbd://?socket={sock}"));
    assert_eq!(var(&out, "uri"), format!("nbd+unix://?socket={sock}"));
    assert_eq!(var(&out, "port"), "");
    assert_eq!(var(&out, "exportname"), "");
    assert_private_dir_removed(&sock);
}

#[test]
fn variables_unix_path() {
    let dir = TempDir::new("cvu");
    let sock = dir.str("sock");
    let o = captive(&["-U", &sock, "memory", "1M"], &print_vars());
    let out = assert_success(&o);
    assert_eq!(var(&out, "unixsocket"), sock);
    assert_eq!(var(&out, "uri"), format!("nbd+unix://?socket={sock}"));
    assert_eq!(var(&out, "nbd"), format!("nbd:unix:{sock}"));
    assert_eq!(var(&out, "port"), "");
    assert_eq!(var(&out, "exportname"), "");
    assert!(
        !Path::new(&sock).exists(),
        "nbdbox must remove its own -U socket at exit: {sock}"
    );

    let o = captive(
        &["-U", &sock, "memory", "1M"],
        &format!("{}; # guestfish", print_vars()),
    );
    let out = assert_success(&o);
    assert_eq!(var(&out, "nbd"), format!("nbd://?socket={sock}"));

    // A relative -U path is made absolute.
    let mut c = Command::new(bin());
    c.args(["-U", "rel.sock", "memory", "1M", "--run", &print_vars()])
        .current_dir(&dir.path);
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    let out = assert_success(&o);
    let abs = fs::canonicalize(&dir.path).unwrap().join("rel.sock");
    let abs = abs.to_str().unwrap();
    assert_eq!(var(&out, "unixsocket"), abs);
    assert_eq!(var(&out, "uri"), format!("nbd+unix://?socket={abs}"));
}

#[test]
fn variables_tcp() {
    let (port, o) = captive_tcp(&["memory", "1M"], &print_vars());
    let out = assert_success(&o);
    assert_eq!(var(&out, "uri"), format!("nbd://localhost:{port}"));
    assert_eq!(var(&out, "nbd"), format!("nbd:localhost:{port}"));
    assert_eq!(var(&out, "port"), port);
    assert_eq!(var(&out, "unixsocket"), "");
    assert_eq!(var(&out, "exportname"), "");

    let (port, o) = captive_tcp(
        &["memory", "1M"],
        &format!("{}; echo guestfish >/dev/null", print_vars()),
    );
    let out = assert_success(&o);
    assert_eq!(var(&out, "nbd"), format!("nbd://localhost:{port}"));
    assert_eq!(var(&out, "uri"), format!("nbd://localhost:{port}"));
}

#[test]
fn variables_named_export() {
    let name = "a b/c";
    let o = captive(&["-U", "-", "-e", name, "memory", "1M"], &print_vars());
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    check_private_socket_path(&sock);
    assert_eq!(var(&out, "uri"), format!("nbd+unix:///a%20b/c?socket={sock}"));
    assert_eq!(var(&out, "exportname"), name);
    assert_eq!(
        var(&out, "nbd"),
        format!("nbd:unix:{sock}"),
        "$nbd never carries the export name"
    );
    assert_eq!(var(&out, "port"), "");
    assert_private_dir_removed(&sock);

    let o = captive(
        &["-U", "-", "--exportname", name, "memory", "1M"],
        &format!("{}; : guestfish", print_vars()),
    );
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    assert_eq!(var(&out, "nbd"), format!("nbd://?socket={sock}"));
    assert_eq!(var(&out, "uri"), format!("nbd+unix:///a%20b/c?socket={sock}"));

    let (port, o) = captive_tcp(&["-e", name, "memory", "1M"], &print_vars());
    let out = assert_success(&o);
    assert_eq!(var(&out, "uri"), format!("nbd://localhost:{port}/a%20b/c"));
    assert_eq!(var(&out, "nbd"), format!("nbd:localhost:{port}"));
    assert_eq!(var(&out, "exportname"), name);

    // Characters the shell would interpret are quoted in the assignment.
    let tricky = "x$HOME`id`\"\\'?é";
    let o = captive(&["-U", "-", "-e", tricky, "memory", "1M"], &print_vars());
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    assert_eq!(var(&out, "exportname"), tricky);
    assert_eq!(
        var(&out, "uri"),
        format!("nbd+unix:///x%24HOME%60id%60%22%5C%27%3F%C3%A9?socket={sock}")
    );
}

#[test]
fn variables_are_not_exported() {
    let script = "echo \"exported=$(env | grep -c -E '^(uri|nbd|port|unixsocket|exportname)=')\"; \
                  echo \"uri-count=$(env | grep -c '^uri=')\"; \
                  echo \"local=$(test -n \"$uri\" && echo set)\"; \
                  sh -c 'echo \"child=[$uri$nbd$port$unixsocket$exportname]\"'";
    let unix = captive(&["-U", "-", "-e", "x", "memory", "1M"], script);
    let (_, tcp) = captive_tcp(&["-e", "x", "memory", "1M"], script);
    for o in [unix, tcp] {
        let out = assert_success(&o);
        let line = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in\n{}", describe(&o)))
                .to_owned()
        };
        assert_eq!(line("local="), "set", "the shell itself sees $uri");
        assert_eq!(line("uri-count="), "0", "uri must not be exported");
        assert_eq!(line("exported="), "0", "no variable may be exported");
        assert_eq!(line("child="), "[]", "a child shell must not see them");
    }
}

// --------------------------------------------------------------------------
// Real clients consuming the variables
// --------------------------------------------------------------------------

fn qemu_virtual_size(out: &str) -> u64 {
    let key = "\"virtual-size\":";
    let at = out
        .find(key)
        .unwrap_or_else(|| panic!("no virtual-size in qemu-img output:\n{out}"));
    out[at + key.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn qemu_img_consumes_nbd() {
    let qemu_img = tool("qemu-img");
    let script = format!("{} info --output=json $nbd", qemu_img.display());
    let o = captive(&["-U", "-", "memory", "1M"], &script);
    assert_eq!(qemu_virtual_size(&assert_success(&o)), 1 << 20, "{}", describe(&o));

    // With an export name, $nbd still works for qemu (it has no name).
    let o = captive(&["-U", "-", "-e", "a b/c", "memory", "2M"], &script);
    assert_eq!(qemu_virtual_size(&assert_success(&o)), 2 << 20, "{}", describe(&o));

    let (_, o) = captive_tcp(&["memory", "3M"], &script);
    assert_eq!(qemu_virtual_size(&assert_success(&o)), 3 << 20, "{}", describe(&o));
}

#[test]
fn nbdinfo_consumes_uri() {
    let nbdinfo = tool("nbdinfo");
    let script = format!("{} --size \"$uri\"", nbdinfo.display());
    let o = captive(&["-U", "-", "memory", "1M"], &script);
    assert_eq!(assert_success(&o).trim(), "1048576", "{}", describe(&o));

    let o = captive(&["-U", "-", "-e", "a b/c", "memory", "2M"], &script);
    assert_eq!(assert_success(&o).trim(), "2097152", "{}", describe(&o));

    let (_, o) = captive_tcp(&["-e", "a b/c", "memory", "3M"], &script);
    assert_eq!(assert_success(&o).trim(), "3145728", "{}", describe(&o));

    let dir = TempDir::new("cnu");
    let sock = dir.str("sock");
    let o = captive(&["-U", &sock, "memory", "4M"], &script);
    assert_eq!(assert_success(&o).trim(), "4194304", "{}", describe(&o));
}

// --------------------------------------------------------------------------
// Exit statuses and what is left afterwards
// --------------------------------------------------------------------------

/// Prologue for exit-path runs: print the socket, wait for the pid file (it
/// is written once the server is ready) and print the pid it holds.
fn exit_path_script(pidfile: &Path, tail: &str) -> String {
    format!(
        "echo \"sock=$unixsocket\"; i=0; \
         while ! test -s {p}; do i=$((i+1)); test $i -gt 600 && break; sleep 0.05; done; \
         echo \"pid=$(cat {p})\"; {tail}",
        p = shell_quote(pidfile.to_str().unwrap())
    )
}

/// Run one exit path and check what must be gone afterwards.
fn run_exit_path(tail: &str) -> Output {
    let dir = TempDir::new("cex");
    let pidfile = dir.join("pid");
    let script = exit_path_script(&pidfile, tail);
    let o = captive(&["-U", "-", "-P", pidfile.to_str().unwrap(), "memory", "1M"], &script);
    let out = stdout(&o);
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{tail:?}: no {k} line\n{}", describe(&o)))
            .to_owned()
    };
    let sock = field("sock=");
    assert_private_dir_removed(&sock);
    let pid: u32 = field("pid=")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{tail:?}: pid file never appeared\n{}", describe(&o)));
    // Give a (wrongly) surviving server a moment to show itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_alive(pid),
        "{tail:?}: server pid {pid} from -P still running\n{}",
        describe(&o)
    );
    assert!(!pidfile.exists(), "{tail:?}: pid file left behind\n{}", describe(&o));
    let left = processes_mentioning(pidfile.to_str().unwrap());
    assert!(
        left.is_empty(),
        "{tail:?}: processes left running: {left:?}\n{}",
        describe(&o)
    );
    o
}

#[test]
fn exit_status_is_the_commands() {
    for (tail, code) in [("true", 0), ("false", 1), ("exit 1", 1), ("exit 42", 42)] {
        let o = run_exit_path(tail);
        assert_eq!(o.status.signal(), None, "{tail}: {}", describe(&o));
        assert_eq!(o.status.code(), Some(code), "{tail}: {}", describe(&o));
    }
    let o = run_exit_path("/nonexistent/command");
    assert_eq!(o.status.code(), Some(127), "{}", describe(&o));
}

#[test]
fn exit_status_command_killed_by_signal() {
    let o = run_exit_path("kill -9 $$");
    assert_eq!(o.status.signal(), None, "nbdbox itself must not die: {}", describe(&o));
    assert_eq!(o.status.code(), Some(137), "128+9 expected\n{}", describe(&o));
    let e = stderr(&o);
    assert!(
        e.contains("signal 9"),
        "stderr should say the command was killed by signal 9\n{}",
        describe(&o)
    );

    let o = run_exit_path("kill -USR1 $$");
    assert_eq!(o.status.code(), Some(128 + 10), "{}", describe(&o));
    assert!(stderr(&o).contains("signal 10"), "{}", describe(&o));
}

#[test]
fn exit_after_command_with_idle_client() {
    // A client stays connected and idle after the command has finished: the
    // server must still wind down and nbdbox exit promptly, with the
    // command's status, cleaning up its socket and pid file.
    let dir = TempDir::new("cic");
    let sock = dir.join("sock");
    let pidfile = dir.join("pid");
    let go = dir.join("go");
    let script = format!(
        "i=0; while ! test -e {go}; do i=$((i+1)); test $i -gt 1200 && exit 99; sleep 0.05; done; exit 7",
        go = shell_quote(go.to_str().unwrap())
    );
    let mut child = Command::new(bin())
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(["memory", "1M", "--run", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() {
        assert!(child.try_wait().unwrap().is_none(), "nbdbox exited early");
        assert!(Instant::now() < deadline, "no pid file after 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut client = RawClient::open(&sock, true, false);
    assert_eq!(client.size, 1 << 20);
    fs::write(&go, "").unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nbdbox still running 15 s after its command ended (idle client connected)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(7), "{status:?}");
    assert!(
        client.closed_within(Duration::from_secs(1)),
        "the idle client should have been disconnected"
    );
    assert!(!pidfile.exists(), "pid file left behind");
    assert!(!sock.exists(), "socket left behind");
}

#[test]
fn startup_failure_never_runs_the_command() {
    let dir = TempDir::new("csf");
    let marker = dir.join("ran");
    let run = format!("touch {}", shell_quote(marker.to_str().unwrap()));

    let leaked = leaked_private_dirs(|| {
        let o = captive(&["-U", "-", "memory", "size=banana"], &run);
        assert_exit1(&o);
        assert!(!marker.exists(), "bad parameter: the command ran\n{}", describe(&o));

        let o = captive(&["-U", "-", "memory", "1M", "nosuchkey=1"], &run);
        assert_exit1(&o);
        assert!(!marker.exists(), "unknown key: the command ran\n{}", describe(&o));

        let o = captive(&["-U", "-", "nosuchplugin"], &run);
        assert_exit1(&o);
        assert!(!marker.exists(), "no plugin: the command ran\n{}", describe(&o));
    });
    assert!(leaked.is_empty(), "failed startups leaked -U - directories: {leaked:?}");

    // Bind errors: a TCP port in use, a live Unix socket, a regular file.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let o = captive(&["-i", "127.0.0.1", "-p", &port, "memory", "1M"], &run);
    assert_exit1(&o);
    assert!(!marker.exists(), "port in use: the command ran\n{}", describe(&o));

    let live = dir.join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let o = captive(&["-U", live.to_str().unwrap(), "memory", "1M"], &run);
    assert_exit1(&o);
    assert!(!marker.exists(), "live socket: the command ran\n{}", describe(&o));
    assert!(live.exists(), "a live socket must not be removed");

    let file = dir.join("plain");
    fs::write(&file, "keep").unwrap();
    let o = captive(&["-U", file.to_str().unwrap(), "memory", "1M"], &run);
    assert_exit1(&o);
    assert!(!marker.exists(), "regular file: the command ran\n{}", describe(&o));
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep");
}

#[test]
fn pidfile_failure_never_runs_the_command() {
    // The pid file cannot be written: nbdbox must fail without having
    // started the command (or at least not leave it running on its own).
    let dir = TempDir::new("cpf");
    let marker = dir.join("ran");
    let o = captive(
        &["-U", "-", "-P", "/nonexistent-dir/pid", "memory", "1M"],
        &format!("sleep 1; touch {}", shell_quote(marker.to_str().unwrap())),
    );
    assert_exit1(&o);
    assert!(stderr(&o).contains("/nonexistent-dir/pid"), "{}", describe(&o));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !marker.exists(),
        "the --run command ran (orphaned) although startup failed\n{}",
        describe(&o)
    );
}
