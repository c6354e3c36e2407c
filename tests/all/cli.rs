//! Command line: informational options, bad input (including filters named
//! wrongly: unknown, a plugin given as a filter and the reverse), option
//! permutation, captive-mode variables and exit status, process lifecycle.

use crate::support::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Value of `key=` lines printed by a --run script.
fn var(out: &str, key: &str) -> String {
    let p = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&p))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{out}"))
        .to_owned()
}

const PRINT_VARS: &str = r#"echo "uri=$uri"; echo "nbd=$nbd"; echo "port=$port"; echo "unixsocket=$unixsocket"; echo "exportname=$exportname""#;

#[track_caller]
fn assert_error_mentions(o: &std::process::Output, what: &str) {
    assert_exit1(o);
    let e = stderr(o);
    assert!(e.contains(what), "stderr should mention {what:?}\n{}", describe(o));
    assert!(
        !stdout(o).contains("RAN"),
        "the --run command must not run after a startup error\n{}",
        describe(o)
    );
}

#[track_caller]
fn assert_error_prefix(o: &std::process::Output) {
    let e = stderr(o);
    let p = format!("{}: error: ", prog_name());
    assert!(e.contains(&p), "stderr should contain {p:?}\n{}", describe(o));
}

// --------------------------------------------------------------------------
// Informational options
// --------------------------------------------------------------------------

#[test]
fn version_exits_0() {
    for opt in ["--version", "-V"] {
        let o = nbdbox(&[opt]);
        let out = assert_success(&o);
        // nbdkit's own line (`nbdkit 1.32.5`), as scripts parse it; nbdbox says which it is
        // in the vendor-build parenthesis (probing.rs checks the details).
        assert!(
            out.starts_with("nbdkit 1.") && out.lines().count() == 1,
            "{opt}: one line, `nbdkit VERSION`\n{}",
            describe(&o)
        );
    }
}

#[test]
fn help_exits_0() {
    let o = nbdbox(&["--help"]);
    let out = assert_success(&o);
    for w in ["PLUGIN", "--run", "-U"] {
        assert!(out.contains(w), "--help should mention {w}\n{}", describe(&o));
    }
}

#[test]
fn dump_plugin_memory() {
    for args in [
        &["memory", "--dump-plugin"][..],
        &["--dump-plugin", "memory"],
        &["memory", "1M", "--dump-plugin"],
    ] {
        let o = nbdbox(args);
        let out = assert_success(&o);
        let lines: Vec<_> = out.lines().collect();
        assert!(lines.contains(&"name=memory"), "{args:?}\n{}", describe(&o));
        assert!(lines.contains(&"magic_config_key=size"), "{args:?}\n{}", describe(&o));
    }
}

#[test]
fn dump_plugin_example1() {
    let o = nbdbox(&["example1", "--dump-plugin"]);
    let out = assert_success(&o);
    assert!(out.lines().any(|l| l == "name=example1"), "{}", describe(&o));
}

// --------------------------------------------------------------------------
// Bad input: exit 1, message names the offending thing, nothing served
// --------------------------------------------------------------------------

#[test]
fn bad_size() {
    let o = run_captive(&["memory", "size=banana"], "echo RAN");
    assert_error_mentions(&o, "size");
    assert_error_prefix(&o);
    let o = run_captive(&["memory", "banana"], "echo RAN");
    assert_error_mentions(&o, "size");
}

#[test]
fn missing_size() {
    let o = run_captive(&["memory"], "echo RAN");
    assert_error_mentions(&o, "size");
    assert_error_prefix(&o);
}

#[test]
fn no_such_plugin() {
    let o = run_captive(&["nosuchplugin"], "echo RAN");
    assert_error_mentions(&o, "nosuchplugin");
    assert_error_prefix(&o);
    let o = run_captive(&["/nonexistent/dir/nosuch.wasm"], "echo RAN");
    assert_error_mentions(&o, "nosuch.wasm");
}

#[test]
fn unknown_parameter() {
    let o = run_captive(&["memory", "1M", "nosuchkey=1"], "echo RAN");
    assert_error_mentions(&o, "nosuchkey");
    assert_error_prefix(&o);
}

#[test]
fn example1_takes_no_parameters() {
    let o = run_captive(&["example1", "foo=bar"], "echo RAN");
    assert_exit1(&o);
    assert!(!stdout(&o).contains("RAN"));
}

#[test]
fn unknown_option() {
    let o = run_captive(&["--no-such-option", "memory", "1M"], "echo RAN");
    assert_error_mentions(&o, "no-such-option");
    let o = run_captive(&["memory", "1M", "--no-such-option"], "echo RAN");
    assert_error_mentions(&o, "no-such-option");
}

#[test]
fn no_plugin_given() {
    let o = nbdbox(&[]);
    assert_exit1(&o);
    let o = nbdbox(&["-U", "-", "--run", "echo RAN"]);
    assert_exit1(&o);
    assert!(!stdout(&o).contains("RAN"));
}

#[test]
fn conflicting_listen_options() {
    let o = run_captive(&["-p", "1", "memory", "1M"], "echo RAN");
    assert_exit1(&o);
    assert!(!stdout(&o).contains("RAN"));
}

#[test]
fn no_such_filter() {
    let o = run_captive(&["--filter=nosuchfilter", "memory", "1M"], "echo RAN");
    assert_error_mentions(&o, "nosuchfilter");
}

#[test]
fn unknown_filter_name_is_refused() {
    let o = nbdbox(&["-U", "-", "--filter=nosuchfilter", "memory", "1M", "--run", "true"]);
    assert_exit1(&o);
    assert!(stderr(&o).contains("nosuchfilter"), "{}", describe(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn plugin_given_as_filter_is_refused() {
    let o = nbdbox(&["-U", "-", "--filter=memory", "memory", "1M", "--run", "true"]);
    assert_exit1(&o);
    let e = stderr(&o);
    assert!(e.contains("'memory'") && e.contains("filter"), "{}", describe(&o));
    for plugin in ["escape", "hostile"] {
        let path = guest_arg(plugin);
        let o = nbdbox(&["-U", "-", &format!("--filter={path}"), "memory", "1M", "--run", "true"]);
        assert_exit1(&o);
        let e = stderr(&o);
        assert!(
            e.contains(&path) && e.contains("is a plugin, not a filter"),
            "{}",
            describe(&o)
        );
    }
}

#[test]
fn filter_given_as_plugin_is_refused() {
    let path = guest_arg("recorder");
    let o = nbdbox(&["-U", "-", &path, "--run", "true"]);
    assert_exit1(&o);
    let e = stderr(&o);
    assert!(e.contains(&path) && e.contains("is a filter"), "{}", describe(&o));
    assert!(e.contains("--filter="), "the message should say how to use it: {e}");
    assert!(Path::new(&path).is_file());
}

// --------------------------------------------------------------------------
// Option permutation and parameters
// --------------------------------------------------------------------------

#[test]
fn options_after_plugin() {
    let mut c = Command::new(bin());
    c.args(["memory", "1M", "-U", "-", "--run", "true"]);
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert_success(&o);

    // -r between the plugin and its parameters, checked by a client.
    let nbdsh = tool("/usr/bin/nbdsh");
    let mut c = Command::new(bin());
    c.args(["memory", "-r", "size=1M", "-U", "-", "--run"]).arg(format!(
        "{} -u \"$uri\" -c 'assert h.is_read_only()' -c 'assert h.get_size() == 1048576' && echo CHECKED",
        nbdsh.display()
    ));
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert!(assert_success(&o).contains("CHECKED"), "{}", describe(&o));

    // `--` ends the options.
    tool("nbdinfo");
    let o = run_captive(&["--", "memory", "1M"], "nbdinfo --size \"$uri\"");
    assert_eq!(assert_success(&o).trim(), "1048576");
}

#[test]
fn size_parameter_forms() {
    tool("nbdinfo");
    for (args, want) in [
        (&["memory", "1M"][..], 1u64 << 20),
        (&["memory", "size=1G"], 1 << 30),
        (&["memory", "4096"], 4096),
        (&["memory", "size=2M", "size=3M"], 3 << 20),
        (&["memory", "1T"], 1 << 40),
    ] {
        let o = run_captive(args, "nbdinfo --size \"$uri\"");
        assert_eq!(assert_success(&o).trim(), want.to_string(), "{args:?}");
    }
}

#[test]
fn threads_and_verbose_accepted() {
    tool("nbdinfo");
    let o = run_captive(&["-t", "4", "-v", "memory", "1M"], "nbdinfo --size \"$uri\"");
    assert_eq!(assert_success(&o).trim(), "1048576");
    let o = run_captive(&["--threads=1", "memory", "1M"], "nbdinfo --size \"$uri\"");
    assert_eq!(assert_success(&o).trim(), "1048576");
}

// --------------------------------------------------------------------------
// Captive mode
// --------------------------------------------------------------------------

#[test]
fn captive_unix_variables() {
    let script = format!(
        "{PRINT_VARS}; echo \"dirmode=$(stat -c %a \"$(dirname \"$unixsocket\")\")\"; \
         test -S \"$unixsocket\" && echo issock=yes; echo \"exported=$(env | grep -c -E '^(uri|nbd|unixsocket|port|exportname)=')\""
    );
    let o = run_captive(&["memory", "1M"], &script);
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    assert!(sock.starts_with('/'), "unixsocket must be absolute: {sock}");
    assert_eq!(var(&out, "uri"), format!("nbd+unix://?socket={sock}"));
    assert_eq!(var(&out, "nbd"), format!("nbd:unix:{sock}"), "$nbd is qemu syntax");
    assert_eq!(var(&out, "port"), "");
    assert_eq!(var(&out, "exportname"), "");
    assert_eq!(var(&out, "dirmode"), "700", "-U - directory is private");
    assert_eq!(var(&out, "issock"), "yes");
    assert_eq!(
        var(&out, "exported"),
        "0",
        "captive variables are shell variables, not environment"
    );
    // The private socket directory is gone after exit.
    let dir = Path::new(&sock).parent().unwrap();
    assert!(!Path::new(&sock).exists(), "socket left behind: {sock}");
    assert!(!dir.exists(), "-U - directory left behind: {}", dir.display());
}

#[test]
fn captive_nbd_guestfish_syntax() {
    let o = run_captive(
        &["memory", "1M"],
        ": guestfish; echo \"nbd=$nbd\"; echo \"unixsocket=$unixsocket\"",
    );
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    assert_eq!(var(&out, "nbd"), format!("nbd://?socket={sock}"));
}

#[test]
fn captive_export_name() {
    let o = run_captive(&["-e", "foo", "memory", "1M"], PRINT_VARS);
    let out = assert_success(&o);
    let sock = var(&out, "unixsocket");
    assert_eq!(var(&out, "uri"), format!("nbd+unix:///foo?socket={sock}"));
    assert_eq!(var(&out, "exportname"), "foo");
}

#[test]
fn captive_tcp() {
    tool("nbdinfo");
    let mut last = String::new();
    for _attempt in 0..2 {
        let port = free_port().to_string();
        let o = run_captive_tcp(&port);
        if o.status.success() {
            let out = stdout(&o);
            assert_eq!(var(&out, "uri"), format!("nbd://localhost:{port}"));
            assert_eq!(var(&out, "nbd"), format!("nbd:localhost:{port}"));
            assert_eq!(var(&out, "port"), port);
            assert_eq!(var(&out, "unixsocket"), "");
            assert_eq!(var(&out, "size"), "1048576");
            return;
        }
        last = describe(&o);
    }
    panic!("TCP captive run failed twice\n{last}");
}

fn run_captive_tcp(port: &str) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(["-p", port, "-i", "127.0.0.1", "memory", "1M", "--run"])
        .arg(format!("{PRINT_VARS}; echo \"size=$(nbdinfo --size \"$uri\")\""));
    run_with_timeout(c, DEFAULT_TIMEOUT)
}

#[test]
fn captive_exit_status() {
    let o = run_captive(&["memory", "1M"], "exit 3");
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    let o = run_captive(&["memory", "1M"], "true");
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let o = run_captive(&["memory", "1M"], "/nonexistent/command");
    assert_eq!(o.status.code(), Some(127), "{}", describe(&o));
    // Command killed by a signal ⇒ 128+N.
    let o = run_captive(&["memory", "1M"], "kill -TERM $$");
    assert_eq!(o.status.code(), Some(143), "{}", describe(&o));
}

#[test]
fn captive_stdin_stdout_passed_through() {
    let o = run_captive(&["memory", "1M"], "echo to-stdout; echo to-stderr >&2");
    assert!(assert_success(&o).contains("to-stdout"));
    assert!(stderr(&o).contains("to-stderr"));
}

// --------------------------------------------------------------------------
// Long-running server: pidfile, SIGTERM, daemonizing
// --------------------------------------------------------------------------

#[test]
fn foreground_pidfile_and_sigterm() {
    let mut srv = Server::start(&["memory", "1M"]);
    assert!(srv.alive());
    let pid = fs::read_to_string(&srv.pidfile).unwrap();
    assert_eq!(pid, format!("{}\n", srv.pid));
    let mode = fs::metadata(&srv.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o170000, 0o140000, "-U PATH must be a socket");
    let mut c = srv.raw();
    c.send_cflags(1);
    drop(c);
    let st = srv.stop();
    assert_eq!(st.signal(), None, "SIGTERM must be handled gracefully");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn daemonizes_without_f() {
    let dir = TempDir::new("daemon");
    let sock = dir.str("sock");
    let pidfile = dir.join("pid");
    struct Kill(std::path::PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Ok(p) = fs::read_to_string(&self.0) {
                let _ = Command::new("kill").args(["-TERM", p.trim()]).status();
            }
        }
    }
    let _guard = Kill(pidfile.clone());
    // The daemon may keep inherited descriptors: give it none of ours.
    let mut child = Command::new(bin())
        .args(["-U", &sock, "-P"])
        .arg(&pidfile)
        .args(["memory", "1M"])
        .env("PATH", child_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the foreground parent did not exit after daemonizing");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(st.success(), "parent of the daemon should exit 0: {st:?}");
    while !pidfile.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = fs::read_to_string(&pidfile).expect("pidfile of the daemon");
    assert!(
        Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "daemon not running"
    );
    tool("nbdinfo");
    let mut c = Command::new("nbdinfo");
    c.arg("--size").arg(format!("nbd+unix://?socket={sock}"));
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert_eq!(assert_success(&o).trim(), "1048576");
}
