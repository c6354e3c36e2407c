//! Where clients connect: bound sockets, sockets handed over by an activator, or stdin and
//! stdout (`-s`). Paths nbdbox creates are recorded for removal at exit.

use super::captive;
use crate::config::{Listen, UnixSocket};
use crate::server::listener::{self, Listener};
use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;

/// Things to remove when the process exits, whichever way it exits normally.
#[derive(Default)]
pub struct Cleanup {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// How clients reach the server, for `--run`.
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    pub fn as_captive(&self) -> captive::Endpoint<'_> {
        match self {
            Endpoint::Tcp(port) => captive::Endpoint::Tcp { port },
            Endpoint::Unix(path) => captive::Endpoint::Unix {
                socket: path.to_str().unwrap_or_default(),
            },
        }
    }
}

/// The listening sockets, and the endpoint they make (None when activated or `-s`).
pub fn listen(how: &Listen, run: bool, cleanup: &mut Cleanup) -> Result<(Vec<Listener>, Option<Endpoint>)> {
    if *how == Listen::Stdio {
        return Ok((Vec::new(), None));
    }
    let explicit = !matches!(
        how,
        Listen::Tcp {
            ipaddr: None,
            port: None
        }
    );
    if let Some(listeners) = activated_sockets(explicit || run)? {
        return Ok((listeners, None));
    }
    // nbdkit ≥ 1.36 (`run_default_socket=Unix`): --run without -i, -p or -U serves on a
    // private Unix socket rather than on every address's port 10809.
    let private = Listen::Unix(UnixSocket::Private);
    let how = if run && !explicit { &private } else { how };
    match how {
        Listen::Unix(UnixSocket::Private) => {
            // Always /tmp, as nbdkit: the path must stay short enough for sun_path.
            let dir = nix::unistd::mkdtemp("/tmp/nbdboxXXXXXX").context("-U -: creating a private directory")?;
            cleanup.dirs.push(dir.clone());
            let socket = dir.join("socket");
            let listener = listener::bind_unix(&socket)?;
            cleanup.files.push(socket.clone());
            Ok((vec![listener], Some(Endpoint::Unix(socket))))
        }
        Listen::Unix(UnixSocket::Path(path)) => {
            let socket = std::path::absolute(path)?;
            let listener = listener::bind_unix(&socket)?;
            cleanup.files.push(socket.clone());
            Ok((vec![listener], Some(Endpoint::Unix(socket))))
        }
        Listen::Tcp { ipaddr, port } => {
            let port = port.clone().unwrap_or_else(|| "10809".into());
            let listeners = listener::bind_tcp(ipaddr.as_deref(), &port)?;
            Ok((listeners, Some(Endpoint::Tcp(port))))
        }
        Listen::Stdio => unreachable!("handled above"),
    }
}

/// systemd-style socket activation: `LISTEN_PID` is us and `LISTEN_FDS` sockets start at fd 3.
/// `conflicting`: an endpoint or `--run` was asked for, which activation cannot combine with.
fn activated_sockets(conflicting: bool) -> Result<Option<Vec<Listener>>> {
    let pid_matches = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let Some(count) = std::env::var("LISTEN_FDS").ok().filter(|_| pid_matches) else {
        return Ok(None);
    };
    let count: i32 = match count.parse() {
        Ok(n) if (1..=16).contains(&n) => n,
        _ => bail!("LISTEN_FDS: expected 1 to 16 sockets, got '{count}'"),
    };
    if conflicting {
        bail!("socket activation cannot be used with -i, -p, -U or --run");
    }
    // SAFETY (remove_var): still single-threaded but for the epoch ticker, which reads no
    // environment; the variables must not reach --run commands.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
    }
    (3..3 + count)
        .map(listener::from_activated_fd)
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
