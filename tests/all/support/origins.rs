//! Real HTTP origins for the network plugins' tests: nginx (HTTP or HTTPS, with a test CA made
//! by the test), and a small Python origin that fails on purpose (flaky_origin.py). Each is
//! started for one test in a private directory and stopped when dropped.

use super::process::run_with_timeout;
use super::temp::TempDir;
use super::tools::{child_path, tool};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A test certificate authority and a server certificate for 127.0.0.1 and localhost.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn make(dir: &TempDir) -> TestPki {
        let openssl = tool("openssl");
        let run = |args: &[&str]| {
            let mut c = Command::new(&openssl);
            c.args(args).current_dir(&dir.path);
            let o = run_with_timeout(c, Duration::from_secs(60));
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=nbdbox test CA",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ]
        .concat());
        fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ]);
        TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// A child process in its own group, killed with the group when dropped.
pub(super) struct Daemon(pub(super) Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

pub(super) fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on port {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// nginx serving a directory, its access log recording the headers the tests look at.
pub struct Nginx {
    pub port: u16,
    pub tls: bool,
    dir: PathBuf,
    _daemon: Daemon,
}

impl Nginx {
    /// Serve `root` over HTTP, or HTTPS with `pki`'s server certificate. `/redirect/NAME`
    /// answers 302 to `/NAME`, and `/offsite/NAME` 302 to the same file at 127.0.0.2.
    pub fn start(dir: &TempDir, root: &Path, pki: Option<&TestPki>) -> Nginx {
        let nginx = tool("/usr/sbin/nginx");
        let port = super::server::free_port();
        let state = dir.join("nginx");
        fs::create_dir_all(state.join("tmp")).unwrap();
        let listen = match pki {
            Some(p) => format!(
                "listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {};",
                p.cert.display(),
                p.key.display()
            ),
            None => format!("listen 127.0.0.1:{port};"),
        };
        let s = state.display();
        // Run as root (CI), nginx's worker would drop to nobody, who cannot read a test's
        // private directory: keep it as the user who runs the tests.
        let as_root = fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        let user = if as_root { "user root;" } else { "" };
        let conf = format!(
            "{user} daemon off; worker_processes 1; pid {s}/nginx.pid; error_log {s}/error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
               log_format probe '$request \"$http_range\" \"$http_user_agent\" \"$http_cookie\" \
             \"$http_authorization\" \"$http_x_test\" $status $connection';\n\
               access_log {s}/access.log probe;\n\
               client_body_temp_path {s}/tmp; proxy_temp_path {s}/tmp; fastcgi_temp_path {s}/tmp;\n\
               uwsgi_temp_path {s}/tmp; scgi_temp_path {s}/tmp;\n\
               server {{ {listen} root {};\n\
                 location ~ ^/redirect/(.*)$ {{ return 302 /$1; }}\n\
                 location ~ ^/offsite/(.*)$ {{ return 302 http://127.0.0.2:{port}/$1; }}\n\
               }}\n\
             }}\n",
            root.display()
        );
        fs::write(state.join("nginx.conf"), conf).unwrap();
        let mut c = Command::new(nginx);
        c.arg("-c")
            .arg(state.join("nginx.conf"))
            .arg("-p")
            .arg(&state)
            .env("PATH", child_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let daemon = Daemon(c.spawn().expect("start nginx"));
        wait_for_port(port, "nginx");
        Nginx {
            port,
            tls: pki.is_some(),
            dir: state,
            _daemon: daemon,
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    /// The access log so far: one line per request (see `start`'s log format).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

/// The Python origin that fails every Nth GET in one way (flaky_origin.py).
pub struct FlakyOrigin {
    pub port: u16,
    log: PathBuf,
    _daemon: Daemon,
}

impl FlakyOrigin {
    /// Serve `file`, faulting every `every`th GET with `mode` (or delaying each by `delay_ms`
    /// with mode `delay`).
    pub fn start(dir: &TempDir, file: &Path, mode: &str, every: u32, delay_ms: u32) -> FlakyOrigin {
        let python = tool("/usr/bin/python3");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/all/support/flaky_origin.py");
        let ready = dir.join(&format!("flaky-{mode}.port"));
        let log = dir.join(&format!("flaky-{mode}.log"));
        // A file left by an earlier origin of the same mode would give its dead port.
        let _ = fs::remove_file(&ready);
        let mut c = Command::new(python);
        c.arg(script)
            .arg(&ready)
            .arg(file)
            .arg(mode)
            .arg(every.to_string())
            .arg(delay_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .process_group(0);
        let daemon = Daemon(c.spawn().expect("start flaky_origin.py"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = fs::read_to_string(&ready).ok().and_then(|p| p.trim().parse().ok()) {
                break port;
            }
            assert!(Instant::now() < deadline, "flaky_origin.py did not start");
            thread::sleep(Duration::from_millis(20));
        };
        FlakyOrigin {
            port,
            log,
            _daemon: daemon,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/disk.img", self.port)
    }

    /// One line per request: `METHOD PATH RANGE FAULTED`, then its headers.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many GETs were made, and how many of them were faulted.
    pub fn gets(&self) -> (usize, usize) {
        let gets: Vec<String> = self
            .log()
            .lines()
            .filter(|l| l.starts_with("GET "))
            .map(str::to_owned)
            .collect();
        let faulted = gets.iter().filter(|l| l.ends_with(" True")).count();
        (gets.len(), faulted)
    }
}
