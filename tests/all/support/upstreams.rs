//! What the network plugins other than curl talk to: NBD servers for the nbd plugin to
//! front (qemu-nbd, for raw files and qemu's block drivers such as qcow2, and Debian's
//! nbdkit, on a Unix socket or TCP port), and s3rver, an S3 service, for the S3 plugin. Each
//! is started for one test in its directory and killed with its process group when dropped.

use super::origins::{wait_for_port, Daemon};
use super::process::run_with_timeout;
use super::temp::TempDir;
use super::tools::{child_path, tool};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct NbdUpstream {
    /// The Unix socket it listens on (unused for a TCP upstream).
    pub sock: PathBuf,
    pub pid: u32,
    _daemon: Daemon,
}

fn spawn(mut c: Command, what: &str) -> Daemon {
    c.env("PATH", child_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    Daemon(c.spawn().unwrap_or_else(|e| panic!("start {what}: {e}")))
}

fn wait_for_socket(sock: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(sock).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {}", sock.display());
        thread::sleep(Duration::from_millis(20));
    }
}

/// `qemu-nbd LISTEN... --format=FORMAT --persistent --shared=0 EXTRA... IMAGE`.
/// `--shared=0` lets it take any number of connections: nbdbox opens one per request in
/// flight.
fn qemu_nbd(listen: &[String], image: &Path, format: &str, extra: &[&str]) -> Daemon {
    let mut c = Command::new(tool("qemu-nbd"));
    c.args(listen)
        .arg(format!("--format={format}"))
        .args(["--persistent", "--shared=0"])
        .args(extra)
        .arg(image);
    spawn(c, "qemu-nbd")
}

impl NbdUpstream {
    fn new(daemon: Daemon, sock: PathBuf) -> NbdUpstream {
        NbdUpstream {
            sock,
            pid: daemon.0.id(),
            _daemon: daemon,
        }
    }

    /// qemu-nbd serving IMAGE on `dir/NAME.sock`.
    pub fn qemu(dir: &TempDir, name: &str, image: impl AsRef<Path>, format: &str, extra: &[&str]) -> NbdUpstream {
        let sock = dir.join(&format!("{name}.sock"));
        let _ = std::fs::remove_file(&sock);
        let daemon = qemu_nbd(&[format!("--socket={}", sock.display())], image.as_ref(), format, extra);
        wait_for_socket(&sock, "qemu-nbd");
        NbdUpstream::new(daemon, sock)
    }

    /// qemu-nbd serving IMAGE on TCP 127.0.0.1:`port`.
    pub fn qemu_tcp(port: u16, image: impl AsRef<Path>, format: &str) -> NbdUpstream {
        let listen = ["--bind=127.0.0.1".to_owned(), format!("--port={port}")];
        let daemon = qemu_nbd(&listen, image.as_ref(), format, &[]);
        wait_for_port(port, "qemu-nbd");
        NbdUpstream::new(daemon, PathBuf::new())
    }

    /// `nbdkit -f -U dir/NAME.sock ARGS...` (Debian's nbdkit).
    pub fn nbdkit(dir: &TempDir, name: &str, args: &[&str]) -> NbdUpstream {
        let sock = dir.join(&format!("{name}.sock"));
        let mut c = Command::new(tool("nbdkit"));
        c.arg("-f").arg("-U").arg(&sock).args(args);
        let daemon = spawn(c, "nbdkit");
        wait_for_socket(&sock, "nbdkit");
        NbdUpstream::new(daemon, sock)
    }

    /// `socket=PATH`, the nbd plugin's parameter for this server.
    pub fn socket_arg(&self) -> String {
        format!("socket={}", self.sock.display())
    }

    /// The server's own URI, for clients that talk to it directly.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.sock.display())
    }
}

/// s3rver (npm), installed by `npm ci --prefix tests/tools`, serving a bucket store in a
/// directory of the test's on a free port, with its one account (S3RVER / S3RVER).
pub struct S3rver {
    pub port: u16,
    _daemon: Daemon,
}

impl S3rver {
    pub const ACCESS_KEY: &'static str = "S3RVER";
    pub const SECRET_KEY: &'static str = "S3RVER";

    pub fn start(dir: &TempDir) -> S3rver {
        let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tools");
        let s3rver = tools.join("node_modules/.bin/s3rver");
        assert!(
            s3rver.is_file(),
            "required tool `s3rver` is not installed: run `npm ci --prefix {}`",
            tools.display()
        );
        let data = dir.join("s3rver");
        std::fs::create_dir_all(&data).unwrap();
        // Port 0, and the port it says it listens on: no race for a free port with the
        // servers other tests start meanwhile.
        let said = dir.join("s3rver.out");
        let mut c = Command::new(tool("node"));
        c.arg(&s3rver)
            .args(["--silent", "--address", "127.0.0.1", "--port", "0", "--directory"])
            .arg(&data)
            // s3rver's continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider.
            .env("NODE_OPTIONS", "--openssl-legacy-provider")
            .env("PATH", child_path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&said).unwrap())
            .stderr(Stdio::null())
            .process_group(0);
        let daemon = Daemon(c.spawn().expect("start s3rver"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let out = std::fs::read_to_string(&said).unwrap_or_default();
            // The whole line, then the port.
            let line = out
                .split("listening on 127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split_once('\n'));
            if let Some(port) = line.and_then(|(port, _)| port.trim().parse().ok()) {
                break port;
            }
            assert!(Instant::now() < deadline, "s3rver did not start: {out}");
            thread::sleep(Duration::from_millis(20));
        };
        S3rver { port, _daemon: daemon }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Run the test's own S3 client (support/s3_client.py, signing independently of the
    /// plugin) with `args`; exit status 2 means "no such key".
    fn client(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/all/support/s3_client.py");
        let mut c = Command::new(tool("/usr/bin/python3"));
        c.arg(script)
            .args([&self.endpoint(), Self::ACCESS_KEY, Self::SECRET_KEY])
            .args(args);
        let o = run_with_timeout(c, Duration::from_secs(60));
        assert!(
            matches!(o.status.code(), Some(0 | 2)),
            "s3_client.py {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    pub fn make_bucket(&self, bucket: &str) {
        self.client(&["mkbucket", bucket]);
    }

    pub fn put(&self, bucket: &str, key: &str, file: &Path) {
        self.client(&["put", bucket, key, file.to_str().unwrap()]);
    }

    /// The object's bytes, or None when there is no such key.
    pub fn get(&self, dir: &TempDir, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = dir.join("s3-get.out");
        let o = self.client(&["get", bucket, key, out.to_str().unwrap()]);
        (o.status.code() == Some(0)).then(|| std::fs::read(&out).unwrap())
    }

    /// The keys under `prefix`, in order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let o = self.client(&["list", bucket, prefix]);
        String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
    }
}
