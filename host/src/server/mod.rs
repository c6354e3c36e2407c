//! Connection handling: listeners, the option-haggling driver and the transmission loop.
//! Sockets and threads live here; the bytes on the wire are `protocol`'s business and the
//! layers a request goes through are `backend`'s.
//!
//! Threads, nbdkit style: one per connection, plus `-t` workers for a parallel export, each
//! reading a request, calling the layers inline and writing the reply. A per-request hand-off
//! to another thread would cost 6–13 µs on two cores; an inline component call costs 0.2 µs.

mod handshake;
pub mod listener;
mod transmission;
pub mod transport;

use crate::api::{Caps, Errno, Support, ThreadModel};
use crate::backend::Export;
use crate::log::{self, Log};
use crate::protocol::consts;
use crate::protocol::NbdError;
use crate::shutdown::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
pub use transport::Transport;

/// What the server serves, and how.
pub struct Server {
    pub exports: Exports,
    pub options: Options,
    pub shutdown: Shutdown,
    pub log: Log,
    pub seats: Arc<Seats>,
}

/// Connections in the transmission phase, against `--max-connections`. A client takes a seat
/// when it picks an export and gives it back when it disconnects; a client that finds none is
/// refused at GO with a message, and the clients being served notice nothing.
pub struct Seats {
    max: usize,
    taken: AtomicUsize,
}

/// One taken seat, given back when dropped.
pub struct Seat(Arc<Seats>);

impl Seats {
    pub fn new(max: usize) -> Arc<Seats> {
        Arc::new(Seats {
            max,
            taken: AtomicUsize::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn take(self: &Arc<Self>) -> Option<Seat> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Seat(self.clone()))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Protocol options from the command line.
pub struct Options {
    /// --no-sr: refuse structured replies.
    pub no_structured_replies: bool,
    /// --mask-handshake: which handshake flags to offer.
    pub handshake_mask: u16,
    /// -t: worker threads per connection to a parallel export.
    pub threads: usize,
}

/// The exports a server serves, by the name a client asks for.
pub struct Exports {
    /// One stack serves every name; its layers decide what a name means (nbdkit's model).
    any_name: Arc<Export>,
}

impl Exports {
    pub fn single(export: Export) -> Exports {
        Exports {
            any_name: Arc::new(export),
        }
    }

    /// The export that serves `name`.
    pub fn for_name(&self, _name: &str) -> &Arc<Export> {
        &self.any_name
    }

    /// The export a client reaches before it names one (preconnect, NBD_OPT_LIST).
    pub fn first(&self) -> &Arc<Export> {
        &self.any_name
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Export>> {
        std::iter::once(&self.any_name)
    }
}

/// Serve one client from greeting to disconnect. Errors end only this connection.
pub fn serve(server: &Server, transport: Transport, id: u64) {
    crate::runtime::peer::serve_peer(transport.peer_name().map(Arc::from));
    let export = server.exports.first().clone();
    // nbdkit: later clients of a serialize_connections export wait before the greeting.
    let _one_at_a_time = export.lock_connection();
    if let Err(e) = export.preconnect() {
        return log::debug!(server.log, "connection {id}: refused before the greeting: {e}");
    }
    match handshake::negotiate(server, transport) {
        Ok(Some((negotiated, transport))) => transmission::run(server, negotiated, &transport, id),
        Ok(None) => log::debug!(server.log, "connection {id}: ended during option haggling"),
        Err(e) => log::debug!(server.log, "connection {id}: {e}"),
    }
}

/// NBD transmission flags for an export with these capabilities (nbdkit's
/// server/protocol-handshake.c).
pub fn eflags(caps: &Caps, structured_replies: bool, thread_model: ThreadModel) -> u16 {
    let mut flags = consts::FLAG_HAS_FLAGS;
    let mut set = |on: bool, flag: u16| {
        if on {
            flags |= flag
        }
    };
    set(!caps.can_write, consts::FLAG_READ_ONLY);
    set(caps.can_flush, consts::FLAG_SEND_FLUSH);
    set(caps.can_fua != Support::None, consts::FLAG_SEND_FUA);
    set(caps.is_rotational, consts::FLAG_ROTATIONAL);
    set(caps.can_trim, consts::FLAG_SEND_TRIM);
    set(caps.can_zero != Support::None, consts::FLAG_SEND_WRITE_ZEROES);
    set(structured_replies, consts::FLAG_SEND_DF);
    set(
        caps.can_multi_conn && thread_model != ThreadModel::SerializeConnections,
        consts::FLAG_CAN_MULTI_CONN,
    );
    set(caps.can_cache != Support::None, consts::FLAG_SEND_CACHE);
    set(
        caps.can_fast_zero && caps.can_zero != Support::None,
        consts::FLAG_SEND_FAST_ZERO,
    );
    flags
}

/// nbdkit's errno → NBD error mapping (server/protocol.c), before the request-flag rule
/// (`NbdError::for_request_flags`).
pub fn nbd_error(errno: Errno) -> NbdError {
    match errno {
        Errno::Perm | Errno::RoFs => NbdError::Perm,
        Errno::Io => NbdError::Io,
        Errno::NoMem => NbdError::NoMem,
        Errno::NoSpc | Errno::FBig => NbdError::NoSpc,
        Errno::Shutdown => NbdError::Shutdown,
        Errno::NotSup => NbdError::NotSup,
        Errno::Overflow => NbdError::Overflow,
        Errno::Inval | Errno::Acces | Errno::NoEnt => NbdError::Inval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eflags_follow_nbdkit() {
        let memory = Caps {
            can_write: true,
            can_flush: true,
            can_trim: true,
            can_zero: Support::Native,
            can_fast_zero: true,
            can_extents: true,
            can_fua: Support::Native,
            can_multi_conn: true,
            can_cache: Support::Native,
            ..Caps::NONE
        };
        // nbdkit memory 1M: 0x0d6d without structured replies, 0x0ded with.
        assert_eq!(eflags(&memory, false, ThreadModel::Parallel), 0x0d6d);
        assert_eq!(eflags(&memory, true, ThreadModel::Parallel), 0x0ded);
        assert_eq!(
            eflags(&memory, false, ThreadModel::SerializeConnections),
            0x0d6d & !consts::FLAG_CAN_MULTI_CONN
        );
        let read_only = eflags(&Caps::NONE, false, ThreadModel::Parallel);
        assert_eq!(read_only, consts::FLAG_HAS_FLAGS | consts::FLAG_READ_ONLY);
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(nbd_error(Errno::RoFs), NbdError::Perm);
        assert_eq!(nbd_error(Errno::FBig), NbdError::NoSpc);
        assert_eq!(nbd_error(Errno::Acces), NbdError::Inval);
        assert_eq!(nbd_error(Errno::NoEnt), NbdError::Inval);
        assert_eq!(nbd_error(Errno::NotSup), NbdError::NotSup);
    }
}
