//! Spawn helpers, a private temp dir type and a minimal raw NBD client.
//!
//! The raw client is written from the protocol description only and keeps its
//! own constants: the suite must not share code with the server it tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Locations
// ---------------------------------------------------------------------------

/// The server binary under test (`NBDBOX_TEST_BIN` overrides it).
pub fn bin() -> PathBuf {
    match std::env::var_os("NBDBOX_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_nbdbox")),
    }
}

/// Program name used in error messages (`nbdbox: error: ...`).
pub fn prog_name() -> String {
    bin().file_name().unwrap().to_string_lossy().into_owned()
}

/// Directory with the test-only guest components (hostile.wasm, escape.wasm).
pub fn guest_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("NBDBOX_GUEST_DIR") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    match option_env!("NBDBOX_GUEST_DIR") {
        Some(p) => PathBuf::from(p),
        None => panic!("NBDBOX_GUEST_DIR was not set at build time (host/build.rs must export it)"),
    }
}

pub fn guest(name: &str) -> PathBuf {
    let p = guest_dir().join(name);
    assert!(
        p.is_file(),
        "test guest component {} is missing (built by host/build.rs)",
        p.display()
    );
    p
}

/// PATH for every child: Debian's tools first, because /usr/bin/nbdsh runs
/// whatever `python3` comes first on PATH and only Debian's has libnbd.
pub fn child_path() -> OsString {
    let mut p = OsString::from("/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(old) = std::env::var_os("PATH") {
        p.push(":");
        p.push(old);
    }
    p
}

/// Resolve a client tool or panic loudly. Absolute paths are checked as is.
pub fn tool(name: &str) -> PathBuf {
    let found = if name.contains('/') {
        let p = PathBuf::from(name);
        is_executable(&p).then_some(p)
    } else {
        std::env::split_paths(&child_path())
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    };
    let p = found.unwrap_or_else(|| {
        panic!("required tool `{name}` is not installed: install {name} (see the test suite README / CI setup)")
    });
    if name.ends_with("nbdsh") || name == "/usr/bin/python3" {
        // The libnbd Python binding must import with Debian's python.
        let ok = Command::new("/usr/bin/python3")
            .args(["-c", "import nbd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "/usr/bin/python3 cannot `import nbd`: install python3-libnbd");
    }
    p
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Keep it short: sockets live in here and sun_path is 108 bytes.
        let path = std::env::temp_dir().join(format!("nbt{}-{}-{}", std::process::id(), n, tag));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        TempDir { path }
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    pub fn str(&self, name: &str) -> String {
        self.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Running processes with a deadline
// ---------------------------------------------------------------------------

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
fn kill_group(pid: u32, sig: &str) {
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

/// `/bin/sh -c SCRIPT` with the tools' PATH and its output discarded (for background
/// clients; `run_with_timeout` captures the output of the ones it runs).
pub fn shell(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(script)
        .env("PATH", child_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
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
pub fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "command failed\n{}", show(o));
    stdout(o)
}

/// Assert a clean failure with exit status 1 (never a signal).
#[track_caller]
pub fn assert_exit1(o: &Output) {
    assert_eq!(o.status.signal(), None, "killed by a signal\n{}", show(o));
    assert_eq!(o.status.code(), Some(1), "expected exit status 1\n{}", show(o));
}

/// Shell-quote a string for `/bin/sh` (single quotes).
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

// ---------------------------------------------------------------------------
// Long-running foreground server
// ---------------------------------------------------------------------------

pub struct Server {
    pub dir: TempDir,
    pub sock: PathBuf,
    pub pidfile: PathBuf,
    pub pid: u32,
    child: Option<Child>,
}

impl Server {
    /// `nbdbox -f -U DIR/sock -P DIR/pid ARGS...`, ready once the pidfile is there.
    pub fn start(args: &[&str]) -> Server {
        match Server::try_start(args) {
            Ok(s) => s,
            Err(e) => panic!("server failed to start: {args:?}\n{e}"),
        }
    }

    /// Like `start`, but returns the exit status and stderr if the server
    /// exits before becoming ready.
    pub fn try_start(args: &[&str]) -> Result<Server, String> {
        let dir = TempDir::new("srv");
        let sock = dir.join("sock");
        let pidfile = dir.join("pid");
        let mut cmd = Command::new(bin());
        cmd.arg("-f")
            .arg("-U")
            .arg(&sock)
            .arg("-P")
            .arg(&pidfile)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(fs::File::create(dir.join("stderr.log")).unwrap())
            .env("PATH", child_path())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {cmd:?}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = fs::read_to_string(&pidfile) {
                if s.ends_with('\n') {
                    let pid: u32 = s.trim().parse().map_err(|e| format!("bad pidfile {s:?}: {e}"))?;
                    let srv = Server {
                        sock,
                        pidfile,
                        pid,
                        child: Some(child),
                        dir,
                    };
                    return Ok(srv);
                }
            }
            if let Some(st) = child.try_wait().unwrap() {
                let err = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                return Err(format!("exited early with {st:?}\n--- stderr ---\n{err}"));
            }
            if Instant::now() >= deadline {
                kill_group(child.id(), "-KILL");
                let _ = child.kill();
                let _ = child.wait();
                let err = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                return Err(format!("no pidfile after 30 s\n--- stderr ---\n{err}"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix://?socket={}", self.sock.display())
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// True while the server process (and the pid in the pidfile) lives.
    pub fn alive(&mut self) -> bool {
        let child_alive = match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        };
        child_alive && Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Raw client, fixed newstyle, after the greeting.
    pub fn raw(&self) -> RawClient {
        RawClient::connect(&self.sock)
    }

    /// SIGTERM, wait (≤ 20 s) and return the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.shutdown().expect("server did not exit within 20 s of SIGTERM")
    }

    fn shutdown(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(10));
        }
        kill_group(child.id(), "-KILL");
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Pick a TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Data helpers
// ---------------------------------------------------------------------------

/// Deterministic incompressible bytes (xorshift64*), distinct per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---------------------------------------------------------------------------
// Raw NBD client
// ---------------------------------------------------------------------------

pub mod nbd {
    pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
    pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
    pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
    pub const REQUEST_MAGIC: u32 = 0x2560_9513;
    pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
    pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

    pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
    pub const FLAG_NO_ZEROES: u16 = 2;
    pub const CFLAG_FIXED_NEWSTYLE: u32 = 1;
    pub const CFLAG_NO_ZEROES: u32 = 2;

    pub const OPT_EXPORT_NAME: u32 = 1;
    pub const OPT_ABORT: u32 = 2;
    pub const OPT_LIST: u32 = 3;
    pub const OPT_STARTTLS: u32 = 5;
    pub const OPT_INFO: u32 = 6;
    pub const OPT_GO: u32 = 7;
    pub const OPT_STRUCTURED_REPLY: u32 = 8;
    pub const OPT_LIST_META_CONTEXT: u32 = 9;
    pub const OPT_SET_META_CONTEXT: u32 = 10;

    pub const REP_ACK: u32 = 1;
    pub const REP_SERVER: u32 = 2;
    pub const REP_INFO: u32 = 3;
    pub const REP_META_CONTEXT: u32 = 4;
    pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
    pub const REP_ERR_POLICY: u32 = 0x8000_0002;
    pub const REP_ERR_INVALID: u32 = 0x8000_0003;
    pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

    pub const INFO_EXPORT: u16 = 0;
    pub const INFO_NAME: u16 = 1;
    pub const INFO_DESCRIPTION: u16 = 2;
    pub const INFO_BLOCK_SIZE: u16 = 3;

    pub const TF_HAS_FLAGS: u16 = 0x0001;
    pub const TF_READ_ONLY: u16 = 0x0002;
    pub const TF_SEND_DF: u16 = 0x0080;

    pub const CMD_READ: u16 = 0;
    pub const CMD_WRITE: u16 = 1;
    pub const CMD_DISC: u16 = 2;
    pub const CMD_FLUSH: u16 = 3;
    pub const CMD_TRIM: u16 = 4;
    pub const CMD_CACHE: u16 = 5;
    pub const CMD_WRITE_ZEROES: u16 = 6;
    pub const CMD_BLOCK_STATUS: u16 = 7;

    pub const CMD_FLAG_FUA: u16 = 1 << 0;
    pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
    pub const CMD_FLAG_DF: u16 = 1 << 2;
    pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
    pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

    pub const REPLY_FLAG_DONE: u16 = 1;
    pub const CHUNK_NONE: u16 = 0;
    pub const CHUNK_OFFSET_DATA: u16 = 1;
    pub const CHUNK_OFFSET_HOLE: u16 = 2;
    pub const CHUNK_BLOCK_STATUS: u16 = 5;
    pub const CHUNK_ERROR: u16 = 32769;
    pub const CHUNK_ERROR_OFFSET: u16 = 32770;

    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
}

use nbd::*;

#[derive(Debug, Clone)]
pub struct OptReply {
    pub opt: u32,
    pub typ: u32,
    pub data: Vec<u8>,
}

impl OptReply {
    pub fn is_final(&self) -> bool {
        self.typ == REP_ACK || self.typ & 0x8000_0000 != 0
    }
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub flags: u16,
    pub typ: u16,
    pub payload: Vec<u8>,
}

/// One complete reply to one request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub cookie: u64,
    /// True if this was a simple reply.
    pub simple: bool,
    /// NBD error (0 = success). For structured replies: from the error chunk.
    pub error: u32,
    /// READ data (assembled from OFFSET_DATA / OFFSET_HOLE chunks).
    pub data: Vec<u8>,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    typ: u16,
    offset: u64,
    len: u32,
}

pub struct RawClient {
    pub s: UnixStream,
    pub gflags: u16,
    pub sr: bool,
    pub size: u64,
    pub eflags: u16,
    next_cookie: u64,
    pending: HashMap<u64, Pending>,
    partial: HashMap<u64, Reply>,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().unwrap())
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

impl RawClient {
    /// Connect and read the 18-byte greeting (checked).
    pub fn connect(path: &Path) -> RawClient {
        let mut c = RawClient::connect_no_greeting(path);
        let g = c.read_n(18);
        assert_eq!(be64(&g[0..]), NBDMAGIC, "greeting must start with NBDMAGIC: {g:02x?}");
        assert_eq!(
            be64(&g[8..]),
            IHAVEOPT,
            "greeting must be newstyle (IHAVEOPT): {g:02x?}"
        );
        c.gflags = be16(&g[16..]);
        c
    }

    pub fn connect_no_greeting(path: &Path) -> RawClient {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        RawClient {
            s,
            gflags: 0,
            sr: false,
            size: 0,
            eflags: 0,
            next_cookie: 1,
            pending: HashMap::new(),
            partial: HashMap::new(),
        }
    }

    /// Greeting + client flags FIXED_NEWSTYLE|NO_ZEROES.
    pub fn connect_fixed(path: &Path) -> RawClient {
        let mut c = RawClient::connect(path);
        assert_eq!(c.gflags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        c.send_cflags(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES);
        c
    }

    /// Ready for transmission: optional structured replies and
    /// base:allocation, then GO "".
    pub fn open(path: &Path, sr: bool, meta: bool) -> RawClient {
        let mut c = RawClient::connect_fixed(path);
        if sr {
            let r = c.option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(r.last().unwrap().typ, REP_ACK, "STRUCTURED_REPLY refused: {r:?}");
            c.sr = true;
        }
        if meta {
            let r = c.option(OPT_SET_META_CONTEXT, &meta_payload("", &["base:allocation"]));
            assert_eq!(r.last().unwrap().typ, REP_ACK, "SET_META_CONTEXT refused: {r:?}");
        }
        c.go("", &[]).expect("GO failed");
        c
    }

    pub fn set_timeout(&self, d: Duration) {
        self.s.set_read_timeout(Some(d)).unwrap();
    }

    pub fn write_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write to server");
    }

    pub fn try_read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v)?;
        Ok(v)
    }

    #[track_caller]
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        self.try_read_n(n)
            .unwrap_or_else(|e| panic!("reading {n} bytes from server: {e}"))
    }

    /// True if the server closes the connection (EOF or reset) within `d`.
    pub fn closed_within(&mut self, d: Duration) -> bool {
        self.s.set_read_timeout(Some(d)).unwrap();
        let deadline = Instant::now() + d;
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("unexpected read error: {e}"),
            }
        }
    }

    pub fn send_cflags(&mut self, f: u32) {
        self.write_raw(&f.to_be_bytes());
    }

    pub fn send_option(&mut self, opt: u32, data: &[u8]) {
        let mut b = Vec::with_capacity(16 + data.len());
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.write_raw(&b);
    }

    pub fn read_opt_reply(&mut self) -> OptReply {
        let h = self.read_n(20);
        assert_eq!(be64(&h), REP_MAGIC, "bad option reply magic: {h:02x?}");
        let opt = be32(&h[8..]);
        let typ = be32(&h[12..]);
        let len = be32(&h[16..]) as usize;
        assert!(len <= 1 << 20, "absurd option reply length {len}");
        let data = self.read_n(len);
        OptReply { opt, typ, data }
    }

    /// Send an option and collect replies up to the final ACK/error.
    pub fn option(&mut self, opt: u32, data: &[u8]) -> Vec<OptReply> {
        self.send_option(opt, data);
        let mut v = Vec::new();
        loop {
            let r = self.read_opt_reply();
            assert_eq!(r.opt, opt, "option reply echoes another option: {r:?}");
            let fin = r.is_final();
            v.push(r);
            if fin {
                return v;
            }
            assert!(v.len() < 10_000, "endless option replies");
        }
    }

    /// INFO or GO; returns all replies. On success also records size/eflags.
    pub fn info_or_go(&mut self, opt: u32, name: &str, infos: &[u16]) -> Vec<OptReply> {
        let r = self.option(opt, &info_payload(name, infos));
        if r.last().unwrap().typ == REP_ACK {
            let ex: Vec<_> = r
                .iter()
                .filter(|x| x.typ == REP_INFO && be16(&x.data) == INFO_EXPORT)
                .collect();
            assert_eq!(ex.len(), 1, "exactly one NBD_INFO_EXPORT expected before ACK: {r:?}");
            assert_eq!(ex[0].data.len(), 12, "NBD_INFO_EXPORT must be 12 bytes");
            self.size = be64(&ex[0].data[2..]);
            self.eflags = be16(&ex[0].data[10..]);
        }
        r
    }

    /// GO; Err(reply type) on failure.
    pub fn go(&mut self, name: &str, infos: &[u16]) -> Result<Vec<OptReply>, u32> {
        let r = self.info_or_go(OPT_GO, name, infos);
        let last = r.last().unwrap().typ;
        if last == REP_ACK {
            Ok(r)
        } else {
            Err(last)
        }
    }

    // ------------------------------ transmission ----------------------------

    pub fn send_request(&mut self, flags: u16, typ: u16, offset: u64, len: u32, payload: &[u8]) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.send_request_cookie(cookie, flags, typ, offset, len, payload);
        cookie
    }

    pub fn send_request_cookie(&mut self, cookie: u64, flags: u16, typ: u16, offset: u64, len: u32, payload: &[u8]) {
        let mut b = Vec::with_capacity(28 + payload.len());
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.write_raw(&b);
        if !payload.is_empty() {
            self.write_raw(payload);
        }
        if typ != CMD_DISC {
            self.pending.insert(cookie, Pending { typ, offset, len });
        }
    }

    /// Read messages until some request's reply is complete.
    pub fn next_reply(&mut self) -> Reply {
        loop {
            let m = self.read_n(4);
            match be32(&m) {
                SIMPLE_REPLY_MAGIC => {
                    let h = self.read_n(12);
                    let error = be32(&h);
                    let cookie = be64(&h[4..]);
                    let p = self
                        .pending
                        .remove(&cookie)
                        .unwrap_or_else(|| panic!("simple reply for unknown cookie {cookie}"));
                    assert!(
                        !self.partial.contains_key(&cookie),
                        "simple reply after structured chunks"
                    );
                    let mut data = Vec::new();
                    if p.typ == CMD_READ && error == 0 {
                        assert!(
                            !self.sr,
                            "READ must not get a simple reply once structured replies are on"
                        );
                        data = self.read_n(p.len as usize);
                    }
                    return Reply {
                        cookie,
                        simple: true,
                        error,
                        data,
                        chunks: vec![],
                    };
                }
                STRUCTURED_REPLY_MAGIC => {
                    assert!(self.sr, "structured reply chunk without structured replies negotiated");
                    let h = self.read_n(16);
                    let flags = be16(&h);
                    let typ = be16(&h[2..]);
                    let cookie = be64(&h[4..]);
                    let len = be32(&h[12..]) as usize;
                    let payload = self.read_n(len);
                    let p = *self
                        .pending
                        .get(&cookie)
                        .unwrap_or_else(|| panic!("chunk for unknown cookie {cookie}"));
                    let rep = self.partial.entry(cookie).or_insert_with(|| Reply {
                        cookie,
                        simple: false,
                        error: 0,
                        data: if p.typ == CMD_READ {
                            vec![0u8; p.len as usize]
                        } else {
                            Vec::new()
                        },
                        chunks: vec![],
                    });
                    match typ {
                        CHUNK_OFFSET_DATA => {
                            assert!(payload.len() >= 9, "short OFFSET_DATA");
                            let off = be64(&payload);
                            let d = &payload[8..];
                            assert!(
                                off >= p.offset && off + d.len() as u64 <= p.offset + p.len as u64,
                                "OFFSET_DATA outside the request"
                            );
                            let s = (off - p.offset) as usize;
                            rep.data[s..s + d.len()].copy_from_slice(d);
                        }
                        CHUNK_OFFSET_HOLE => {
                            assert_eq!(payload.len(), 12, "OFFSET_HOLE length");
                            let off = be64(&payload);
                            let n = be32(&payload[8..]) as u64;
                            assert!(off >= p.offset && off + n <= p.offset + p.len as u64);
                        }
                        CHUNK_ERROR | CHUNK_ERROR_OFFSET => {
                            assert!(payload.len() >= 6, "short error chunk");
                            let e = be32(&payload);
                            let ml = be16(&payload[4..]) as usize;
                            assert!(6 + ml <= payload.len(), "error chunk message overruns");
                            assert_ne!(e, 0, "error chunk with error 0");
                            if rep.error == 0 {
                                rep.error = e;
                            }
                        }
                        CHUNK_NONE => assert!(payload.is_empty()),
                        CHUNK_BLOCK_STATUS => {}
                        t => panic!("unknown chunk type {t}"),
                    }
                    rep.chunks.push(Chunk { flags, typ, payload });
                    if flags & REPLY_FLAG_DONE != 0 {
                        self.pending.remove(&cookie);
                        let mut r = self.partial.remove(&cookie).unwrap();
                        if r.error != 0 {
                            r.data.clear();
                        }
                        return r;
                    }
                }
                other => panic!("bad reply magic {other:#x}"),
            }
        }
    }

    /// Send one request and wait for its reply.
    pub fn request(&mut self, flags: u16, typ: u16, offset: u64, len: u32, payload: &[u8]) -> Reply {
        let c = self.send_request(flags, typ, offset, len, payload);
        let r = self.next_reply();
        assert_eq!(r.cookie, c, "reply cookie mismatch");
        r
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.read_flags(offset, len, 0)
    }

    pub fn read_flags(&mut self, offset: u64, len: u32, flags: u16) -> Result<Vec<u8>, u32> {
        let r = self.request(flags, CMD_READ, offset, len, &[]);
        if r.error != 0 {
            Err(r.error)
        } else {
            assert_eq!(r.data.len(), len as usize);
            Ok(r.data)
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.request(0, CMD_WRITE, offset, data.len() as u32, data).error
    }

    /// A payload-free command; returns the NBD error.
    pub fn cmd(&mut self, typ: u16, flags: u16, offset: u64, len: u32) -> u32 {
        self.request(flags, typ, offset, len, &[]).error
    }

    /// BLOCK_STATUS: Ok((context id, descriptors)).
    pub fn block_status(&mut self, offset: u64, len: u32, flags: u16) -> Result<(u32, Vec<(u32, u32)>), u32> {
        let r = self.request(flags, CMD_BLOCK_STATUS, offset, len, &[]);
        if r.error != 0 {
            return Err(r.error);
        }
        let bs: Vec<_> = r.chunks.iter().filter(|c| c.typ == CHUNK_BLOCK_STATUS).collect();
        assert_eq!(bs.len(), 1, "one BLOCK_STATUS chunk expected: {:?}", r.chunks);
        let p = &bs[0].payload;
        assert!(
            p.len() >= 12 && (p.len() - 4) % 8 == 0,
            "bad BLOCK_STATUS payload length {}",
            p.len()
        );
        let id = be32(p);
        let d = p[4..].chunks(8).map(|x| (be32(x), be32(&x[4..]))).collect();
        Ok((id, d))
    }

    pub fn disconnect(mut self) {
        self.send_request(0, CMD_DISC, 0, 0, &[]);
        let _ = self.s.shutdown(std::net::Shutdown::Write);
    }
}

/// Payload of INFO/GO: name_len, name, n_infos, infos.
pub fn info_payload(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        b.extend_from_slice(&i.to_be_bytes());
    }
    b
}

/// Payload of LIST_META_CONTEXT / SET_META_CONTEXT.
pub fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        b.extend_from_slice(&(q.len() as u32).to_be_bytes());
        b.extend_from_slice(q.as_bytes());
    }
    b
}

pub fn be16_of(b: &[u8]) -> u16 {
    be16(b)
}
pub fn be32_of(b: &[u8]) -> u32 {
    be32(b)
}
pub fn be64_of(b: &[u8]) -> u64 {
    be64(b)
}
