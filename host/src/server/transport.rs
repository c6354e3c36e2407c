//! The one byte stream a connection owns, from greeting to disconnect. The handshake takes it
//! and hands it on (so a later STARTTLS can replace it in the middle of the handshake);
//! transmission workers share it by reference, reading under the connection's read lock
//! and writing under its write lock, as nbdkit's `conn->recv` / `conn->send` do.

use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown as Direction, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::tls::TlsStream;
use crate::runtime::peer::Peer;

pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// `-s`: the client is on stdin and stdout.
    Stdio {
        input: File,
        output: File,
    },
    /// A socket after STARTTLS.
    Tls(Box<TlsStream>),
}

/// A second handle on a connection's socket, with which the shutdown path stops reading from
/// an idle client. It keeps the socket open, so it never touches a reused descriptor.
pub enum HangUp {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl HangUp {
    /// The worker waiting for the client's next request sees end of file.
    pub fn hang_up(&self) {
        let _ = match self {
            HangUp::Tcp(s) => s.shutdown(Direction::Read),
            HangUp::Unix(s) => s.shutdown(Direction::Read),
        };
    }
}

impl Transport {
    /// The client's address as nbdkit_peer_name gives it: `IP:PORT` for TCP, `unix` for a
    /// Unix socket, none on stdin.
    pub fn peer_name(&self) -> Option<String> {
        match self {
            Transport::Tcp(s) => s.peer_addr().ok().map(|a| a.to_string()),
            Transport::Unix(_) => Some("unix".into()),
            Transport::Stdio { .. } => None,
            Transport::Tls(s) => s.peer_name(),
        }
    }

    /// The client as a component may ask about it (nbdkit_peer_name, nbdkit_is_tls,
    /// nbdkit_peer_tls_dn).
    pub fn peer(&self) -> Peer {
        Peer {
            name: self.peer_name(),
            tls: match self {
                Transport::Tls(s) => Some(s.peer().clone()),
                _ => None,
            },
            credentials: self.unix_credentials(),
        }
    }

    /// SO_PEERCRED of a Unix socket client (kept across STARTTLS).
    fn unix_credentials(&self) -> Option<(u32, u32, u32)> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let unix = match self {
            Transport::Unix(_) => true,
            Transport::Tls(s) => s.peer_name().as_deref() == Some("unix"),
            _ => false,
        };
        let credentials = getsockopt(&self.input_fd(), PeerCredentials).ok().filter(|_| unix)?;
        Some((credentials.pid() as u32, credentials.uid(), credentials.gid()))
    }

    /// The socket a reply's bytes can be spliced to: plain TCP or Unix, not TLS or stdio.
    pub fn splice_target(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Transport::Tcp(s) => Some(s.as_fd()),
            Transport::Unix(s) => Some(s.as_fd()),
            Transport::Stdio { .. } | Transport::Tls(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    fn input_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Tcp(s) => s.as_fd(),
            Transport::Unix(s) => s.as_fd(),
            Transport::Stdio { input, .. } => input.as_fd(),
            Transport::Tls(s) => s.fd(),
        }
    }

    /// Wait up to `timeout` for the client to send something (or hang up): false if it
    /// stayed quiet.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        if let Transport::Tls(s) = self {
            if s.has_pending() {
                return Ok(true);
            }
        }
        let mut fds = [PollFd::new(self.input_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(ready) => Ok(ready > 0),
            Err(nix::errno::Errno::EINTR) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Poll without sleeping until the client sends something (or hangs up), or `until`.
    pub fn poll_readable(&self, until: Instant) -> io::Result<()> {
        while !self.wait_readable(Duration::ZERO)? && Instant::now() < until {
            // A client sharing this CPU gets to run and send it.
            std::thread::yield_now();
        }
        Ok(())
    }

    pub fn hang_up_handle(&self) -> io::Result<Option<HangUp>> {
        Ok(match self {
            Transport::Tcp(s) => Some(HangUp::Tcp(s.try_clone()?)),
            Transport::Unix(s) => Some(HangUp::Unix(s.try_clone()?)),
            Transport::Stdio { .. } | Transport::Tls(_) => None,
        })
    }
}

impl Read for &Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => (&*s).read(buf),
            Transport::Unix(s) => (&*s).read(buf),
            Transport::Stdio { input, .. } => (&*input).read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for &Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => (&*s).write(buf),
            Transport::Unix(s) => (&*s).write(buf),
            Transport::Stdio { output, .. } => (&*output).write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => (&*s).write_vectored(bufs),
            Transport::Unix(s) => (&*s).write_vectored(bufs),
            Transport::Stdio { output, .. } => (&*output).write_vectored(bufs),
            Transport::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
