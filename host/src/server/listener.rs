//! Listening sockets (TCP, Unix) and the accept loop: one thread per connection, until the
//! shutdown path fires; then in-flight requests finish and idle clients are let go.

use super::transport::{HangUp, Transport};
use super::{serve, Server};
use crate::log;
use anyhow::{bail, Context as _, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    fn accept(&self) -> std::io::Result<Transport> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                // Small replies must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                Transport::Tcp(stream)
            }
            Listener::Unix(l) => Transport::Unix(l.accept()?.0),
        })
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
    use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
    use std::os::fd::{FromRawFd, OwnedFd};
    let address = getsockname::<SockaddrStorage>(fd).with_context(|| format!("LISTEN_FDS: fd {fd} is not a socket"))?;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    // SAFETY: the activator handed this descriptor to us; nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(match address.family() {
        Some(AddressFamily::Unix) => Listener::Unix(UnixListener::from(owned)),
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
    open: Mutex<HashMap<u64, Option<HangUp>>>,
    ended: Condvar,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<HangUp>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn len(&self) -> usize {
        self.lock().len()
    }
    fn add(&self, id: u64, hang_up: Option<HangUp>) {
        self.lock().insert(id, hang_up);
    }
    fn remove(&self, id: u64) {
        let idle = {
            let mut open = self.lock();
            open.remove(&id);
            open.is_empty()
        };
        self.ended.notify_all();
        if idle {
            give_back_freed_memory();
        }
    }
    /// Wait up to `grace` for connections to end by themselves.
    fn wait(&self, grace: Duration) -> bool {
        let open = self.lock();
        let (open, _) = self
            .ended
            .wait_timeout_while(open, grace, |open| !open.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        open.is_empty()
    }
    /// Stop reading from every remaining client: its worker sees EOF after finishing what
    /// it is doing.
    fn hang_up(&self) {
        for hang_up in self.lock().values().flatten() {
            hang_up.hang_up();
        }
    }
}

/// How long an idle client may hold up a shutdown before it is disconnected, and how long
/// calls still running in components then have before they are cut off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Once the last client has gone: what its workers freed sits in glibc's per-thread heaps,
/// which give memory back only from their top (a server that once had 256 clients would keep
/// tens of MiB). malloc_trim returns every free page of every heap.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long accepting pauses when the process is out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accept connections until the shutdown path fires, then wind down.
pub fn accept_loop(listeners: Vec<Listener>, server: Arc<Server>) {
    let connections = Arc::new(Connections::default());
    let next_id = AtomicU64::new(1);
    while !server.shutdown.requested() {
        let mut fds: Vec<PollFd> = listeners
            .iter()
            .map(|l| PollFd::new(l.fd(), PollFlags::POLLIN))
            .chain([PollFd::new(server.shutdown.wake_fd(), PollFlags::POLLIN)])
            .collect();
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!(server.log, "poll: {e}");
                break;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        for (listener, _) in listeners.iter().zip(ready).filter(|(_, ready)| *ready) {
            accept_one(listener, &server, &connections, next_id.fetch_add(1, Ordering::Relaxed));
        }
    }
    drop(listeners);
    if !connections.wait(SHUTDOWN_GRACE) {
        connections.hang_up();
        if !connections.wait(SHUTDOWN_GRACE) {
            server.shutdown.abort();
            connections.wait(Duration::from_secs(60));
        }
    }
}

fn accept_one(listener: &Listener, server: &Arc<Server>, connections: &Arc<Connections>, id: u64) {
    let transport = match listener.accept() {
        Ok(transport) => transport,
        Err(e) => {
            log::debug!(server.log, "accept: {e}");
            if matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
            ) {
                // The client stays queued and the listener readable: pause rather than spin.
                std::thread::sleep(ACCEPT_BACKOFF);
            }
            return;
        }
    };
    if let (true, Transport::Tcp(stream)) = (server.options.keepalive, &transport) {
        if let Err(e) = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::KeepAlive, &true) {
            log::debug!(server.log, "connection {id}: --keepalive: {e}");
        }
    }
    // Clients still haggling may wait for a seat to free up, but only as many as could be
    // served once more: beyond that a flood is closed before the greeting.
    if connections.len() >= server.seats.max().saturating_mul(2) {
        return log::debug!(server.log, "connection {id}: closed at once, too many connections");
    }
    connections.add(id, transport.hang_up_handle().ok().flatten());
    let (thread_server, registry) = (server.clone(), connections.clone());
    let spawned = std::thread::Builder::new().name(format!("conn-{id}")).spawn(move || {
        log::debug!(thread_server.log, "connection {id}: accepted");
        serve(&thread_server, transport, id);
        registry.remove(id);
    });
    if let Err(e) = spawned {
        // The socket is dropped with the closure: the client sees the connection close.
        connections.remove(id);
        log::error!(server.log, "cannot start a thread for connection {id}: {e}");
    }
}
