//! nbdkit-probing(1) and the command line nbdkit grew after 1.32: `--version` with layers,
//! `--dump-config`, the option lists and bash completion, `-D` flags, `--print-uri`,
//! `--timeout`, `--keepalive`, `--log`, `--name`, `@FILE` parameters, `--no-mc`, `-n`, and
//! the integrator scripts of `tests/integrators` run with `nbdkit` pointing at nbdbox.

use crate::support::nbd::*;
use crate::support::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of a successful run's stdout.
#[track_caller]
fn lines(o: &std::process::Output) -> Vec<String> {
    assert_success(o).lines().map(str::to_owned).collect()
}

fn nbdkit(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(tool("nbdkit"));
    c.args(args);
    run_with_timeout(c, DEFAULT_TIMEOUT)
}

/// `key=value` lines of `--dump-config`.
fn dump_config(o: &std::process::Output) -> Vec<(String, String)> {
    lines(o)
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn key<'a>(config: &'a [(String, String)], key: &str) -> &'a str {
    config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}= in --dump-config: {config:?}"))
}

// --------------------------------------------------------------------------
// --version and --dump-config
// --------------------------------------------------------------------------

#[test]
fn version_is_nbdkits_line_for_a_vendor_build() {
    let ours = lines(&nbdbox(&["--version"]));
    let theirs = lines(&nbdkit(&["--version"]));
    assert_eq!(ours.len(), 1, "{ours:?}");
    // `nbdkit 1.32.5`: scripts take the second word as the version nbdbox behaves as.
    let words: Vec<&str> = ours[0].split(' ').collect();
    assert_eq!(
        words[..2],
        theirs[0].split(' ').collect::<Vec<_>>()[..],
        "{ours:?} vs {theirs:?}"
    );
    assert_eq!(words[2..], ["(nbdbox", &format!("{})", env!("CARGO_PKG_VERSION"))]);
    assert_eq!(lines(&nbdbox(&["-V"])), ours);
}

#[test]
fn version_lists_each_layer_outermost_first() {
    let args = ["--filter=retry", "--filter=cow", "memory", "--version"];
    let names = |out: Vec<String>| -> Vec<String> {
        out[1..]
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    let ours = lines(&nbdbox(&args));
    assert_eq!(ours[0], lines(&nbdbox(&["--version"]))[0]);
    assert_eq!(names(ours), names(lines(&nbdkit(&args))));
    // Parameters and a plugin given by path are fine too.
    let path = guest_arg("recorder");
    let ours = lines(&nbdbox(&[&format!("--filter={path}"), "memory", "1M", "-V"]));
    assert_eq!(names(ours), ["recorder", "memory"]);
}

#[test]
fn version_fails_when_a_layer_is_missing() {
    for args in [
        &["no-such-plugin", "--version"][..],
        &["--filter=no-such-filter", "null", "--version"],
        &["--version", "--filter=retry", "--filter=no-such-filter", "null"],
        &["/nonexistent/plugin.wasm", "--version"],
    ] {
        let o = nbdbox(args);
        assert_exit1(&o);
        let missing = args
            .iter()
            .find(|a| a.contains("no-such") || a.contains("nonexistent"))
            .unwrap();
        let missing = missing.trim_start_matches("--filter=");
        assert!(stderr(&o).contains(missing), "{args:?}\n{}", describe(&o));
        assert!(stdout(&o).is_empty(), "{args:?}\n{}", describe(&o));
        if !missing.starts_with('/') {
            assert_eq!(nbdkit(args).status.code(), Some(1), "nbdkit {args:?}");
        }
    }
}

#[test]
fn dump_config_answers_nbdkits_probes_honestly() {
    let ours = dump_config(&nbdbox(&["--dump-config"]));
    let theirs = dump_config(&nbdkit(&["--dump-config"]));
    for (k, _) in &theirs {
        let known_absent = [
            "libdir",
            "mandir",
            "root_tls_certificates_dir",
            "sbindir",
            "sysconfdir",
            "zstd",
        ];
        if !known_absent.contains(&k.as_str()) {
            key(&ours, k);
        }
    }
    let version = key(&ours, "version");
    assert_eq!(
        version,
        key(&theirs, "version"),
        "nbdbox provides nbdkit 1.32.5's behaviour"
    );
    assert_eq!(
        format!("{}.{}.", key(&ours, "version_major"), key(&ours, "version_minor")),
        version[..version.rfind('.').unwrap() + 1]
    );
    let nbdbox_version = env!("CARGO_PKG_VERSION");
    assert_eq!(key(&ours, "nbdbox_version"), nbdbox_version);
    assert_eq!(key(&ours, "version_extra"), format!("nbdbox {nbdbox_version}"));
    assert_eq!(key(&ours, "name"), "nbdbox");
    let binary = PathBuf::from(key(&ours, "binary"));
    assert_eq!(fs::canonicalize(&binary).unwrap(), fs::canonicalize(bin()).unwrap());
    assert_eq!(Path::new(key(&ours, "bindir")), binary.parent().unwrap());
    assert_eq!(key(&ours, "exit_with_parent"), "yes");
    assert_eq!(key(&ours, "timeout_option"), "yes");
    // Built-ins live in the binary: no directory to list.
    assert_eq!(key(&ours, "plugindir"), "");
    assert_eq!(key(&ours, "filterdir"), "");
    assert!(key(&ours, "plugins").split(',').any(|p| p == "memory"));
    assert!(key(&ours, "filters").split(',').any(|f| f == "cacheextents"));
}

#[test]
fn run_defaults_to_a_private_unix_socket() {
    let ours = dump_config(&nbdbox(&["--dump-config"]));
    assert_eq!(key(&ours, "run_default_socket"), "Unix");
    tool("nbdinfo");
    let mut c = Command::new(bin());
    c.args([
        "memory",
        "1M",
        "--run",
        "echo \"$uri\"; echo \"$port\"; nbdinfo --size \"$uri\"",
    ]);
    let out = lines(&run_with_timeout(c, DEFAULT_TIMEOUT));
    assert!(out[0].starts_with("nbd+unix://?socket=/"), "{out:?}");
    assert_eq!(out[1], "", "no TCP port");
    assert_eq!(out[2], "1048576");
}

// --------------------------------------------------------------------------
// Option lists and bash completion
// --------------------------------------------------------------------------

#[test]
fn option_lists_cover_nbdkits() {
    for flag in ["--short-options", "--long-options"] {
        let ours = lines(&nbdbox(&[flag]));
        let theirs = lines(&nbdkit(&[flag]));
        // What nbdbox does not offer: IPv4/6-only resolution, vsock, swap locking and SELinux
        // socket labels.
        let unsupported = [
            "-4",
            "-6",
            "--ipv4-only",
            "--ipv6-only",
            "--vsock",
            "--swap",
            "--selinux-label",
        ];
        let missing: Vec<&String> = theirs
            .iter()
            .filter(|o| !unsupported.contains(&o.as_str()) && !ours.contains(o))
            .collect();
        assert!(missing.is_empty(), "{flag}: nbdkit's {missing:?} missing from {ours:?}");
        assert!(!ours.iter().any(|o| o.ends_with("-options")), "{ours:?}");
    }
    let long = lines(&nbdbox(&["--long-options"]));
    for later in [
        "--print-uri",
        "--timeout",
        "--keepalive",
        "--no-mc",
        "--name",
        "--log",
        "--debug",
    ] {
        assert!(long.iter().any(|o| o == later), "{later} missing");
    }
}

#[test]
fn bash_completion_asks_the_binary() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/bash-completion/nbdbox");
    let complete = |word: &str| -> Vec<String> {
        let mut c = Command::new(tool("bash"));
        c.arg("-c")
            .arg("source \"$1\"; COMP_WORDS=(\"$2\" \"$3\"); COMP_CWORD=1; _nbdbox; printf '%s\\n' \"${COMPREPLY[@]}\"")
            .arg("bash")
            .arg(&script)
            .arg(bin())
            .arg(word);
        lines(&run_with_timeout(c, DEFAULT_TIMEOUT))
    };
    assert_eq!(complete("--no-m"), ["--no-mc", "--no-meta-contexts"]);
    let filters = complete("--filter=cache");
    assert!(filters.contains(&"--filter=cacheextents".to_owned()), "{filters:?}");
    assert!(complete("mem").contains(&"memory".to_owned()));
    assert!(complete("-").contains(&"-D".to_owned()));
}

// --------------------------------------------------------------------------
// Flags accepted as nbdkit accepts them
// --------------------------------------------------------------------------

#[test]
fn newstyle_flags_accepted() {
    tool("nbdinfo");
    for flag in ["-n", "--newstyle", "--new-style"] {
        let o = run_captive(&[flag, "memory", "1M"], "nbdinfo --size \"$uri\"");
        assert_eq!(assert_success(&o).trim(), "1048576", "{flag}");
    }
}

#[test]
fn debug_flags_warn_as_nbdkit_and_never_fail() {
    let warnings = |o: &std::process::Output, program: &str| -> Vec<String> {
        stderr(o)
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{program}: warning: ")).map(str::to_owned))
            .collect()
    };
    let with = |flags: &[&str]| -> Vec<String> {
        let mut args: Vec<&str> = flags.iter().flat_map(|f| ["-D", f]).collect();
        args.extend(["memory", "1M"]);
        let ours = run_captive(&args, "echo RAN");
        let theirs = nbdkit_captive(&args, "echo RAN");
        assert_eq!(assert_success(&ours), "RAN\n", "{flags:?}");
        assert_eq!(assert_success(&theirs), "RAN\n");
        let (ours, theirs) = (warnings(&ours, &prog_name()), warnings(&theirs, "nbdkit"));
        assert_eq!(ours.len(), theirs.len(), "{flags:?}: {ours:?} vs {theirs:?}");
        ours
    };
    // What virt-v2v and CDI pass: silent in both.
    assert!(with(&["nbdkit.backend.datapath=0", "nbdkit.backend.controlpath=0"]).is_empty());
    // A flag for a layer that is not loaded: the same words as nbdkit.
    assert_eq!(with(&["vddk.stats=1"]), ["debug flag -D vddk.stats was not used"]);
    // A flag the server or a loaded layer does not have: warned, named.
    let unknown = with(&["nbdkit.no-such=1", "memory.no-such=1"]);
    assert!(unknown[0].contains("-D nbdkit.no-such"), "{unknown:?}");
    assert!(unknown[1].contains("-D memory.no-such"), "{unknown:?}");
    // `--debug` and the flag after the plugin (CDI's order).
    let o = run_captive(&["memory", "1M", "--debug", "vddk.x=2"], "echo RAN");
    assert_eq!(warnings(&o, &prog_name()), ["debug flag -D vddk.x was not used"]);
    // Malformed: a usage error in both, the command never runs.
    for bad in ["nodot", "a.b", "a.b=", "a.b=x"] {
        let o = run_captive(&["-D", bad, "memory", "1M"], "echo RAN");
        assert_exit1(&o);
        assert!(stderr(&o).contains("NAME.FLAG=N"), "{}", describe(&o));
        assert_exit1(&nbdkit_captive(&["-D", bad, "memory", "1M"], "echo RAN"));
    }
}

#[test]
fn environ_debug_flag_dumps_the_environment_when_verbose() {
    let mut c = Command::new(bin());
    c.args([
        "-v",
        "-D",
        "nbdkit.environ=1",
        "-U",
        "-",
        "memory",
        "1M",
        "--run",
        "true",
    ])
    .env("NBDBOX_PROBE_MARK", "here");
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert_success(&o);
    assert!(stderr(&o).contains("debug: NBDBOX_PROBE_MARK=here"), "{}", describe(&o));
}

// --------------------------------------------------------------------------
// --print-uri, --timeout, --keepalive
// --------------------------------------------------------------------------

#[test]
fn print_uri_prints_what_clients_connect_to() {
    tool("nbdinfo");
    let dir = TempDir::new("uri");
    let sock = dir.str("s");
    let mut c = Command::new(bin());
    c.args(["-U", &sock, "--print-uri", "-e", "a b", "memory", "1M", "--run"])
        .arg("nbdinfo --size \"$uri\"; echo \"$uri\"");
    let out = lines(&run_with_timeout(c, DEFAULT_TIMEOUT));
    // Not a terminal: the URI alone, before the command's output.
    assert_eq!(out[0], format!("nbd+unix:///a%20b?socket={sock}"));
    assert_eq!(out[1], "1048576");
    assert_eq!(out[2], out[0], "--print-uri and $uri agree");
    // A daemon prints it before going to the background.
    let pidfile = dir.join("pid");
    let o = nbdbox(&[
        "-U",
        &dir.str("d"),
        "-P",
        pidfile.to_str().unwrap(),
        "--print-uri",
        "memory",
        "1M",
    ]);
    let out = lines(&o);
    let pid = fs::read_to_string(&pidfile).unwrap();
    let _ = Command::new("kill").arg(pid.trim()).status();
    assert_eq!(out, [format!("nbd+unix://?socket={}", dir.str("d"))]);
}

#[test]
fn timeout_drops_clients_that_do_not_negotiate() {
    tool("nbdinfo");
    let srv = Server::start(&["--timeout=1", "memory", "1M"]);
    // A client that connects and says nothing is let go after the deadline.
    let started = Instant::now();
    let mut silent = RawClient::connect(&srv.sock);
    assert!(silent.closed_within(Duration::from_secs(10)), "still connected");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "dropped too early: {waited:?}");
    // One that negotiates in time is served for as long as it likes.
    let mut prompt = RawClient::open(&srv.sock, true, false);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(prompt.read(0, 512).unwrap(), vec![0; 512]);
    prompt.disconnect();
    let o = run_with_timeout(
        {
            let mut c = Command::new(tool("nbdinfo"));
            c.args(["--size", &srv.uri()]);
            c
        },
        DEFAULT_TIMEOUT,
    );
    assert_eq!(assert_success(&o).trim(), "1048576");
    // Delays in nbdkit_parse_delay's forms; nonsense is refused by name.
    assert_success(&run_captive(&["--timeout=250ms", "memory", "1M"], "true"));
    let o = run_captive(&["--timeout=soon", "memory", "1M"], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("--timeout"), "{}", describe(&o));
}

/// A foreground TCP server on 127.0.0.1, killed with its process group on drop.
struct TcpServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl TcpServer {
    fn start(extra: &[&str]) -> TcpServer {
        let dir = TempDir::new("tcp");
        let pidfile = dir.join("pid");
        let port = free_port();
        let child = Command::new(bin())
            .args([
                "-f",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-P",
                pidfile.to_str().unwrap(),
            ])
            .args(extra)
            .args(["memory", "1M"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n')) {
            assert!(Instant::now() < deadline, "TCP server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TcpServer { child, port, _dir: dir }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The timer /proc/net/tcp shows for the server's end of an established connection on
/// `port` (2: keepalive, 0: none).
fn server_side_timer(port: u16) -> u32 {
    let local = format!(":{port:04X}");
    let table = fs::read_to_string("/proc/net/tcp").unwrap();
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[1].ends_with(&local) && f[3] == "01")
        .unwrap_or_else(|| panic!("no established connection on port {port}:\n{table}"));
    row[5].split(':').next().unwrap().parse().unwrap()
}

#[test]
fn keepalive_turns_on_tcp_keepalive() {
    use std::io::Read;
    for (flag, timer) in [(None, 0), (Some("--keepalive"), 2), (Some("--keep-alive"), 2)] {
        let srv = TcpServer::start(flag.as_slice());
        let mut client = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        let mut greeting = [0u8; 18];
        client.read_exact(&mut greeting).unwrap();
        // Once the greeting's ACK is in, the only timer left is keepalive's.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(server_side_timer(srv.port), timer, "{flag:?}");
    }
}

// --------------------------------------------------------------------------
// --log, --name
// --------------------------------------------------------------------------

#[test]
fn log_sends_errors_where_asked() {
    let dir = TempDir::new("log");
    let file = dir.str("errors.log");
    fs::write(&file, "earlier line\n").unwrap();
    let bad = ["memory", "size=banana"];
    let with = |opts: &[&str]| {
        let mut args = opts.to_vec();
        args.extend(bad);
        let o = run_captive(&args, "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"));
        o
    };
    // A file: appended, nothing on stderr.
    let o = with(&[&format!("--log={file}")]);
    assert!(!stderr(&o).contains("banana"), "{}", describe(&o));
    let logged = fs::read_to_string(&file).unwrap();
    assert!(logged.starts_with("earlier line\n"), "{logged}");
    assert!(
        logged.contains(&format!("{}: error: ", prog_name())) && logged.contains("banana"),
        "{logged}"
    );
    // null: nowhere; stderr and default: stderr.
    assert!(!stderr(&with(&["--log=null"])).contains("banana"));
    for to in ["--log=stderr", "--log=default"] {
        assert!(stderr(&with(&[to])).contains("error: size=banana"), "{to}");
    }
    // syslog: not on stderr.
    assert!(!stderr(&with(&["--log=syslog"])).contains("banana"));
    // --name tags the lines.
    let o = with(&["--name", "in0"]);
    assert!(
        stderr(&o).contains(&format!("{}[in0]: error: ", prog_name())),
        "{}",
        describe(&o)
    );
    // A relative path or a file that cannot be written is refused.
    assert_exit1(&with(&["--log=relative.log"]));
    let o = with(&["--log=/nonexistent/dir/x.log"]);
    assert!(stderr(&o).contains("--log"), "{}", describe(&o));
}

// --------------------------------------------------------------------------
// @FILE parameters, --no-mc
// --------------------------------------------------------------------------

#[test]
fn parameters_from_files() {
    tool("nbdinfo");
    let dir = TempDir::new("params");
    fs::create_dir(dir.join("more")).unwrap();
    fs::write(dir.join("params.txt"), "# the disk\nsize=2M\n\n@./more/alloc.txt\n").unwrap();
    fs::write(dir.join("more/alloc.txt"), "allocator=malloc\n").unwrap();
    let at = format!("@{}", dir.str("params.txt"));
    let o = run_captive(&["memory", &at], "nbdinfo --size \"$uri\"; nbdinfo --map \"$uri\"");
    let out = assert_success(&o);
    assert!(out.starts_with("2097152\n"), "{out}");
    // allocator=malloc came from the nested file: the whole disk is data.
    assert!(out.contains("0     2097152    0  data"), "{out}");
    let o = run_captive(&["memory", &format!("@{}", dir.str("none.txt"))], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("none.txt"), "{}", describe(&o));
}

#[test]
fn no_meta_contexts_offers_none() {
    let srv = Server::start(&["--no-mc", "memory", "1M"]);
    let mut c = RawClient::connect_fixed(&srv.sock);
    assert_eq!(c.option(OPT_STRUCTURED_REPLY, &[]).last().unwrap().typ, REP_ACK);
    c.sr = true;
    for option in [OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT] {
        let replies = c.option(option, &meta_payload("", &["base:allocation"]));
        assert_eq!(replies.last().unwrap().typ, REP_ERR_UNSUP, "{option}: {replies:?}");
    }
    c.go("", &[]).expect("GO");
    assert_eq!(c.read(0, 512).unwrap(), vec![0; 512]);
}

// --------------------------------------------------------------------------
// Integrator scripts (tests/integrators), with `nbdkit` on PATH being nbdbox
// --------------------------------------------------------------------------

/// Run `tests/integrators/NAME` with `nbdkit` on PATH being `server`; returns stdout.
fn integrator(name: &str, server: &Path) -> String {
    for needed in ["qemu-img", "qemu-io", "nbdinfo", "xz", "md5sum"] {
        tool(needed);
    }
    let dir = TempDir::new("integrator");
    let shims = dir.join("bin");
    fs::create_dir(&shims).unwrap();
    symlink(server, shims.join("nbdkit")).unwrap();
    let work = dir.join("work");
    fs::create_dir(&work).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/integrators")
        .join(name);
    // run_with_timeout sets the tools' PATH: the shim goes in front of it here.
    let mut c = Command::new(tool("bash"));
    c.args(["-c", "PATH=\"$1:$PATH\" exec bash \"$2\" \"$3\"", "bash"])
        .arg(&shims)
        .arg(script)
        .arg(&work);
    assert_success(&run_with_timeout(c, Duration::from_secs(300)))
}

#[test]
fn integrator_probing_script() {
    let ours = integrator("probing.sh", &bin());
    for line in [
        "version 1.32",
        "plugins and filters detected",
        "exit-with-parent supported",
        "--run defaults to a Unix socket",
        "--timeout supported",
    ] {
        assert!(ours.lines().any(|l| l == line), "no {line:?} in:\n{ours}");
    }
    // The script itself holds for nbdkit 1.32.5, which has neither later feature.
    let theirs = integrator("probing.sh", &tool("nbdkit"));
    assert!(theirs.contains("plugins and filters detected"), "{theirs}");
}

#[test]
fn integrator_virt_v2v_script() {
    let expected = "nbdkit version: 1.32.5\nconverted through the socket\nnbdkit exited with status 0\n";
    assert_eq!(integrator("virt-v2v.sh", &bin()), expected);
    assert_eq!(integrator("virt-v2v.sh", &tool("nbdkit")), expected);
}

#[test]
fn integrator_cdi_file_script() {
    let expected = "xz: imported, nbdkit exited with status 0\nvddk-style: imported, nbdkit exited with status 0\n";
    assert_eq!(integrator("cdi-file.sh", &bin()), expected);
    assert_eq!(integrator("cdi-file.sh", &tool("nbdkit")), expected);
}

// --------------------------------------------------------------------------
// A fatal signal during --run
// --------------------------------------------------------------------------

#[test]
fn a_signal_during_run_stops_the_command_too() {
    use std::os::unix::process::ExitStatusExt;
    for (signal, code) in [("-TERM", 143), ("-INT", 130), ("-QUIT", 131)] {
        let dir = TempDir::new("sigrun");
        let sleeper = dir.join("sleep.pid");
        // A grandchild of nbdbox: the shell's child, which execs sleep under its own pid.
        let script = format!(
            "sh -c 'echo $$ > {}; exec sleep 60'; echo COMMAND-WENT-ON",
            sleeper.display()
        );
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let mut server = Command::new(bin())
            .args(["-U", "-", "memory", "1M", "--run", &script])
            .env("PATH", child_path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let sleep_pid: u32 = loop {
            if let Some(pid) = fs::read_to_string(&sleeper).ok().and_then(|p| p.trim().parse().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "the command did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The signal goes to nbdbox alone, as `kill PID` or a service manager sends it.
        let sent = Command::new("kill")
            .args([signal, &server.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = server.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = server.kill();
                let _ = Command::new("kill").args(["-KILL", &sleep_pid.to_string()]).status();
                panic!("{signal}: nbdbox still waits for its command");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (out, err) = (fs::read_to_string(out).unwrap(), fs::read_to_string(err).unwrap());
        assert_eq!(status.signal(), None);
        assert_eq!(status.code(), Some(code), "{signal}\n{out}\n{err}");
        let number = code - 128;
        assert!(
            err.contains(&format!("external command was killed by signal {number}")),
            "{err}"
        );
        assert!(!out.contains("COMMAND-WENT-ON"), "{out}");
        let gone = Instant::now() + Duration::from_secs(5);
        while pid_alive(sleep_pid) {
            assert!(
                Instant::now() < gone,
                "{signal}: the command's sleep {sleep_pid} was left running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
