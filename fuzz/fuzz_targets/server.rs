//! The whole server in-process, fed one client session per input, as nbdkit fuzzes itself
//! through `-s`: every input is what a client sends from the first byte after the server's
//! greeting to the end; the client then stops writing and reads until the server hangs up.
//!
//! The servers are the binary's own path, started once per process on threads of this one:
//! the command lines below, parsed by `nbdbox::cli` and run by `nbdbox::lifecycle::run`
//! (what `main` does), each listening on a Unix socket; every input is one connection to each.
//! Going through the command line keeps the harness independent of how the lifecycle builds
//! its exports, and covers the listener too.
//!
//! Findings: a panic anywhere, a session still open `SESSION_DEADLINE` after the client
//! stopped sending, threads or descriptors still held after the session ended, and replies
//! that cannot answer what the client sent (`transcript`).
//!
//! `NBDBOX_FUZZ_VERBOSE=1` runs the servers with `-v`, to see why a reproducer's session went
//! the way it did.

#![no_main]

mod transcript;

use clap::Parser as _;
use std::io::{Read, Write};
use std::net::Shutdown as Direction;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The servers every input is sent to, as command lines less `-f -U SOCKET`.
const SERVERS: [&[&str]; 2] = [
    &["memory", "1M"],
    // readahead directly over memory, so that it does read ahead (over retry it stands aside).
    &["--filter=retry", "--filter=readahead", "memory", "1M", "-t", "2"],
];

/// How long a session may take once the client has sent everything. The sessions are small
/// and the disk is in memory: anything near this is a hang.
const SESSION_DEADLINE: Duration = Duration::from_secs(10);

/// How long a finished session's threads and descriptors may take to go away (the server
/// hangs up before its connection thread has quite finished).
const RELEASE_DEADLINE: Duration = Duration::from_secs(2);

/// How long the servers may take to start (the first run compiles the components).
const START_DEADLINE: Duration = Duration::from_secs(120);

struct Harness {
    sockets: Vec<PathBuf>,
    /// Threads and descriptors of the process between sessions.
    baseline: Resources,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// A seed session that writes and reads through every layer of the servers.
const WARM_UP: &[u8] = include_bytes!("../corpus/server/structured-commands");

nbdbox_fuzz::fuzz_target!(|data| {
    let harness = HARNESS.get_or_init(start);
    for socket in &harness.sockets {
        run_session(socket, data);
    }
    harness.check_released();
});

/// The servers' sockets live in `$TMPDIR/nbdbox-fuzz-PID`, left behind at exit (libFuzzer
/// exits from its own code); each run removes those of processes that are gone.
const SOCKET_DIR_PREFIX: &str = "nbdbox-fuzz-";

fn start() -> Harness {
    remove_stale_socket_dirs();
    let dir = std::env::temp_dir().join(format!("{SOCKET_DIR_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("socket directory");
    let verbose = std::env::var_os("NBDBOX_FUZZ_VERBOSE").is_some_and(|v| v == "1");
    let libfuzzer_actions = SignalActions::save();
    let sockets: Vec<PathBuf> = SERVERS
        .iter()
        .enumerate()
        .map(|(i, args)| {
            let socket = dir.join(format!("{i}.sock"));
            let socket_arg = socket.to_str().expect("a UTF-8 temporary directory").to_owned();
            let mut command_line = vec!["nbdbox", "-f", "-U", &socket_arg];
            command_line.extend(verbose.then_some("-v"));
            command_line.extend_from_slice(args);
            let config = nbdbox::cli::Cli::try_parse_from(&command_line)
                .expect("command line")
                .into_config()
                .expect("config");
            std::thread::spawn(move || {
                // It returns only if it could not start: once it serves, signals are
                // libFuzzer's again (below).
                let code = nbdbox::lifecycle::run(config);
                eprintln!("fuzz-server: a server stopped ({code:?})");
                std::process::exit(1);
            });
            socket
        })
        .collect();
    let started = Instant::now();
    for socket in &sockets {
        while UnixStream::connect(socket).is_err() {
            assert!(started.elapsed() < START_DEADLINE, "{} did not start", socket.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // A session first, so that whatever the servers start once and keep (thread pools such
    // as the host's background threads, which readahead's first read starts; caches; a
    // connection thread still finishing the probe above) is in the baseline.
    std::thread::sleep(RELEASE_DEADLINE);
    for socket in &sockets {
        run_session(socket, WARM_UP);
    }
    // The servers are serving, so past installing their signal handlers: Ctrl-C and SIGTERM
    // go back to libFuzzer, which stops the run without a crash report (the servers would
    // shut down and cut off the session in flight).
    libfuzzer_actions.restore();
    std::thread::sleep(RELEASE_DEADLINE);
    Harness {
        sockets,
        baseline: Resources::now(),
    }
}

/// What SIGINT, SIGQUIT, SIGTERM and SIGHUP do: the signals a server takes over
/// (`Shutdown::handle_signals`).
struct SignalActions(Vec<(libc::c_int, libc::sigaction)>);

impl SignalActions {
    const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP];

    fn save() -> SignalActions {
        SignalActions(
            Self::SIGNALS
                .iter()
                .map(|&signal| {
                    // SAFETY: with no new action, sigaction(2) only writes the current one into
                    // `current`, a plain C struct for which all zeroes is a valid value.
                    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
                    unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) };
                    (signal, current)
                })
                .collect(),
        )
    }

    fn restore(&self) {
        for (signal, action) in &self.0 {
            // SAFETY: `action` is what sigaction(2) reported for this signal.
            unsafe { libc::sigaction(*signal, action, std::ptr::null_mut()) };
        }
    }
}

fn remove_stale_socket_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(SOCKET_DIR_PREFIX));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One client session: `input` is sent after the server's greeting, then the client stops
/// writing and reads until the server hangs up; what it read must answer `input`.
fn run_session(socket: &Path, input: &[u8]) {
    let client = UnixStream::connect(socket).expect("connect to the server");
    // Written on a thread of its own: the server may answer before it has read everything,
    // and neither side must wait on a full socket buffer the other is not draining.
    let sending = {
        let mut client = client.try_clone().expect("clone the client socket");
        let input = input.to_vec();
        std::thread::spawn(move || {
            // The server may hang up before reading everything: that is its right.
            let _ = client.write_all(&input);
            let _ = client.shutdown(Direction::Write);
        })
    };
    let started = Instant::now();
    let mut client = client;
    let mut replies = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        let left = SESSION_DEADLINE.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "the server did not hang up {SESSION_DEADLINE:?} after the client stopped sending"
        );
        client.set_read_timeout(Some(left)).expect("read timeout");
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => replies.extend_from_slice(&buf[..n]),
            // A timeout is judged at the top of the loop; a signal (libFuzzer's alarm for
            // -timeout) only interrupts the wait.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            // A reset is a hang-up too.
            Err(_) => break,
        }
    }
    sending.join().expect("sender thread");
    transcript::check(input, &replies);
}

/// Threads and open descriptors of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resources {
    threads: usize,
    fds: usize,
}

impl Resources {
    fn now() -> Resources {
        let count = |dir| std::fs::read_dir(dir).map(|d| d.count()).expect("read /proc/self");
        Resources {
            threads: count("/proc/self/task"),
            fds: count("/proc/self/fd"),
        }
    }

    fn within(self, baseline: Resources) -> bool {
        self.threads <= baseline.threads && self.fds <= baseline.fds
    }
}

impl Harness {
    /// The server hangs up before its connection thread has quite finished, and a finished
    /// thread may stay listed for a moment while the kernel ends it.
    fn check_released(&self) {
        let started = Instant::now();
        loop {
            let now = Resources::now();
            if now.within(self.baseline) {
                return;
            }
            assert!(
                started.elapsed() < RELEASE_DEADLINE,
                "a finished session left resources behind: {now:?}, baseline {:?}",
                self.baseline
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}
