//! Listening sockets (TCP, Unix) and the accept loop: one thread per connection, until the
//! shutdown path fires; then in-flight requests finish and idle clients are let go.

use super::{serve, ServerConfig};
use crate::lifecycle::shutdown;
use crate::log;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use wasmtime::error::Context as _;
use wasmtime::{bail, format_err, Result};

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// Bind TCP: the given address, or every address of this host, skipping addresses that are
/// taken or whose family is unavailable, as nbdkit does.
pub fn bind_tcp(ipaddr: Option<&str>, port: &str) -> Result<Vec<Listener>> {
    let Ok(port) = port.parse::<u16>() else {
        bail!("-p: '{port}' is not a port number")
    };
    let hosts: Vec<&str> = match ipaddr {
        Some(addr) => vec![addr],
        None => vec!["::", "0.0.0.0"],
    };
    let mut listeners = Vec::new();
    let mut last_error = None;
    for host in hosts {
        let addrs = (host.trim_matches(|c| c == '[' || c == ']'), port)
            .to_socket_addrs()
            .with_context(|| format!("-i: cannot resolve '{host}'"))?;
        for addr in addrs {
            match TcpListener::bind(addr) {
                Ok(l) => listeners.push(Listener::Tcp(l)),
                Err(e) if matches!(e.kind(), ErrorKind::AddrInUse) && !listeners.is_empty() => {}
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
                Err(e) => last_error = Some(format!("{addr}: {e}")),
            }
        }
    }
    if listeners.is_empty() {
        bail!(
            "unable to bind to any TCP/IP socket on port {port}: {}",
            last_error.unwrap_or_default()
        );
    }
    Ok(listeners)
}

/// Bind a Unix socket. A socket file nobody listens on any more (a dead server's) is
/// replaced; a live one, or any other file, is an error.
pub fn bind_unix(path: &Path) -> Result<Listener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(Listener::Unix(l)),
        Err(e) if e.kind() == ErrorKind::AddrInUse && is_stale_socket(path) => {
            std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
            Ok(Listener::Unix(
                UnixListener::bind(path).with_context(|| format!("-U: {}", path.display()))?,
            ))
        }
        Err(e) => Err(e).with_context(|| format!("-U: cannot bind {}", path.display())),
    }
}

/// Adopt a listening socket passed by a socket activator (fd 3 onwards).
pub fn from_activated_fd(fd: RawFd) -> Result<Listener> {
    use nix::sys::socket::{getsockname, SockaddrLike, SockaddrStorage};
    use std::os::fd::{FromRawFd, OwnedFd};
    let address =
        getsockname::<SockaddrStorage>(fd).map_err(|e| format_err!("LISTEN_FDS: fd {fd} is not a socket: {e}"))?;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    // SAFETY: the activator handed this descriptor to us; nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(match address.family() {
        Some(nix::sys::socket::AddressFamily::Unix) => Listener::Unix(UnixListener::from(owned)),
        _ => Listener::Tcp(TcpListener::from(owned)),
    })
}

fn is_stale_socket(path: &Path) -> bool {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket && matches!(UnixStream::connect(path), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// Open connections, so the shutdown path can let idle clients go.
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, RawFd>>,
    ended: Condvar,
}

impl Connections {
    fn add(&self, id: u64, fd: RawFd) {
        self.open.lock().unwrap().insert(id, fd);
    }
    /// Called before the connection's socket is closed, so `hang_up` never touches a
    /// reused descriptor.
    fn remove(&self, id: u64) {
        self.open.lock().unwrap().remove(&id);
        self.ended.notify_all();
    }
    /// Wait up to `grace` for connections to end by themselves.
    fn wait(&self, grace: Duration) -> bool {
        let open = self.open.lock().unwrap();
        let (open, _) = self
            .ended
            .wait_timeout_while(open, grace, |open| !open.is_empty())
            .unwrap();
        open.is_empty()
    }
    /// Stop reading from every remaining client: its worker sees EOF after finishing what
    /// it is doing.
    fn hang_up(&self) {
        for &fd in self.open.lock().unwrap().values() {
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }
}

/// How long an idle client may hold up a shutdown before it is disconnected.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Accept connections until the shutdown path fires, then wind down.
pub fn accept_loop(listeners: Vec<Listener>, config: Arc<ServerConfig>) {
    let connections = Arc::new(Connections::default());
    let next_id = AtomicU64::new(1);
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: l.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    fds.push(libc::pollfd {
        fd: shutdown::wake_fd().as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    while !shutdown::requested() {
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            log::error!("poll: {e}");
            break;
        }
        for (listener, pfd) in listeners.iter().zip(&fds) {
            if pfd.revents & libc::POLLIN != 0 {
                accept_one(listener, &config, &connections, next_id.fetch_add(1, Ordering::Relaxed));
            }
        }
    }
    drop(listeners);
    if !connections.wait(SHUTDOWN_GRACE) {
        connections.hang_up();
        connections.wait(Duration::from_secs(60));
    }
}

fn accept_one(listener: &Listener, config: &Arc<ServerConfig>, connections: &Arc<Connections>, id: u64) {
    let accepted = match listener {
        Listener::Tcp(l) => l.accept().map(|(s, _)| {
            // Small replies must not wait for Nagle.
            let _ = s.set_nodelay(true);
            (s.as_raw_fd(), Stream::Tcp(s))
        }),
        Listener::Unix(l) => l.accept().map(|(s, _)| (s.as_raw_fd(), Stream::Unix(s))),
    };
    let (fd, stream) = match accepted {
        Ok(accepted) => accepted,
        Err(e) => return log::debug!("accept: {e}"),
    };
    connections.add(id, fd);
    let (config, connections) = (config.clone(), connections.clone());
    let spawned = std::thread::Builder::new().name(format!("conn-{id}")).spawn(move || {
        log::debug!("connection {id}: accepted");
        match stream.split() {
            Ok((mut reader, mut writer)) => {
                serve(&config, &mut reader, &mut writer, id);
                // Deregister while the socket is still open (see `Connections::remove`).
                connections.remove(id);
            }
            Err(e) => {
                log::debug!("connection {id}: {e}");
                connections.remove(id);
            }
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start a thread for connection {id}: {e}");
    }
}

/// An accepted socket, split into independent read and write halves.
enum Stream {
    Tcp(std::net::TcpStream),
    Unix(UnixStream),
}

type Half = Box<dyn ReadWrite + Send>;
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

impl Stream {
    fn split(self) -> std::io::Result<(Half, Half)> {
        Ok(match self {
            Stream::Tcp(s) => (Box::new(s.try_clone()?), Box::new(s)),
            Stream::Unix(s) => (Box::new(s.try_clone()?), Box::new(s)),
        })
    }
}
