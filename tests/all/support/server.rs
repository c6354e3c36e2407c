//! A long-running foreground server (`nbdbox -f -U DIR/sock -P DIR/pid ...`) for tests that
//! connect to it themselves, stopped (SIGTERM, then SIGKILL) on drop.

use super::process::kill_group;
use super::raw_client::RawClient;
use super::temp::TempDir;
use super::tools::{bin, child_path};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
