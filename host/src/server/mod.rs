//! Connection handling: listeners, the option-haggling driver and the transmission loop.
//! Sockets and threads live here; the bytes on the wire are `protocol`'s business and the
//! layers a request goes through are `backend`'s.
//!
//! Threads, nbdkit style: one per connection, plus `-t` workers for a parallel export, each
//! reading a request, calling the layers inline and writing the reply. A per-request hand-off
//! to another thread would cost 6–13 µs on two cores; an inline component call costs 0.2 µs.
//! Between a quick client's requests the reader polls briefly instead of sleeping
//! (`busy_poll`).

mod busy_poll;
mod handshake;
pub mod listener;
pub mod tls;
mod transmission;
pub mod transport;

use crate::api::{Caps, Errno, Error, ExportEntry, Support, ThreadModel};
use crate::backend::{Export, Opened};
use crate::log::{self, Log};
use crate::protocol::consts;
use crate::protocol::NbdError;
use crate::shutdown::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;
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
    pub tls: tls::Tls,
    /// --timeout: a client that has not finished negotiating by then is dropped.
    pub handshake_timeout: Option<std::time::Duration>,
    /// --keepalive: SO_KEEPALIVE on TCP connections.
    pub keepalive: bool,
    /// --no-mc: LIST_META_CONTEXT and SET_META_CONTEXT are answered ERR_UNSUP.
    pub no_meta_contexts: bool,
    /// -o: the oldstyle protocol.
    pub oldstyle: bool,
}

/// The exports a server serves, by the name a client asks for. A reload replaces the
/// table: connections that open an export afterwards see the new one, and those that
/// opened one keep it.
pub struct Exports(RwLock<Arc<Table>>);

impl Exports {
    pub fn new(table: Table) -> Exports {
        Exports(RwLock::new(Arc::new(table)))
    }

    pub fn current(&self) -> Arc<Table> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serve `table` from now on; the one it replaces is returned.
    pub fn replace(&self, table: Table) -> Arc<Table> {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|p| p.into_inner()), Arc::new(table))
    }

    /// The export `name` selects, opened: see [`Table::open`].
    pub fn open(&self, name: &str) -> Result<(Arc<Export>, Opened), Error> {
        self.current().open(name)
    }

    /// NBD_OPT_LIST: see [`Table::list`].
    pub fn list(&self) -> Result<Vec<ExportEntry>, Error> {
        self.current().list()
    }

    /// nbdkit's .preconnect for a new client: see [`Table::preconnect`].
    pub fn preconnect(&self) -> Result<(), Error> {
        self.current().preconnect()
    }
}

/// One export a name selects.
pub struct Named {
    pub name: String,
    pub description: Option<String>,
    pub export: Arc<Export>,
}

/// Exports by name. A client's name selects an export and nothing else: the named export
/// whose name it is, else the any-name export if there is one (nbdkit's model, the
/// command line's one stack, whose layers decide what a name means); "" selects the
/// default export when one is named.
pub struct Table {
    /// In the order they are listed.
    named: Vec<Named>,
    any_name: Option<Arc<Export>>,
    /// Which of `named` "" selects.
    default: Option<usize>,
}

impl Table {
    /// `default` names one of `named`, or none.
    pub fn new(named: Vec<Named>, any_name: Option<Arc<Export>>, default: Option<&str>) -> Table {
        let default = default.and_then(|wanted| named.iter().position(|n| n.name == wanted));
        Table {
            named,
            any_name,
            default,
        }
    }

    /// The export and the name its layers see: a named export's own name, the client's
    /// name for the any-name export; None for "", which the layers' default export
    /// stands for (nbdkit's .default_export).
    fn select<'a>(&'a self, name: &'a str) -> Option<(&'a Arc<Export>, Option<&'a str>)> {
        let named = self.named.iter().find(|n| n.name == name);
        let named = named.or_else(|| self.default.filter(|_| name.is_empty()).map(|i| &self.named[i]));
        let (export, seen) = match (named, &self.any_name) {
            (Some(named), _) => (&named.export, named.name.as_str()),
            (None, Some(any_name)) => (any_name, name),
            (None, None) => return None,
        };
        Some((export, Some(seen).filter(|seen| !seen.is_empty())))
    }

    /// The one export of a table that has only one. It meets clients before the greeting,
    /// as nbdkit's one stack does (preconnect, serialize_connections); in a table of
    /// several, a client meets its export when it names it.
    pub fn sole(&self) -> Option<&Arc<Export>> {
        match (&self.named[..], &self.any_name) {
            ([only], None) => Some(&only.export),
            ([], Some(any_name)) => Some(any_name),
            _ => None,
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Export>> {
        self.named.iter().map(|n| &n.export).chain(&self.any_name)
    }

    /// nbdkit's .preconnect, for a client that has named no export yet: the sole export's;
    /// in a table of several, [`Table::open`] calls the chosen one's.
    pub fn preconnect(&self) -> Result<(), Error> {
        self.sole().map_or(Ok(()), |export| export.preconnect())
    }

    /// Open the export `name` selects for one connection.
    pub fn open(&self, name: &str) -> Result<(Arc<Export>, Opened), Error> {
        let (export, seen) = self
            .select(name)
            .ok_or_else(|| Error::new(Errno::Inval, "no export by that name"))?;
        if self.sole().is_none() {
            export.preconnect()?;
        }
        let seen = match seen {
            Some(seen) => seen.to_owned(),
            None => export.default_export().unwrap_or_default(),
        };
        let opened = export.open(&seen)?;
        Ok((export.clone(), opened))
    }

    /// NBD_OPT_LIST: the named exports with their descriptions, then what the any-name
    /// export's layers list.
    pub fn list(&self) -> Result<Vec<ExportEntry>, Error> {
        let mut listed: Vec<ExportEntry> = self
            .named
            .iter()
            .map(|n| ExportEntry {
                name: n.name.clone(),
                description: n.description.clone(),
            })
            .collect();
        if let Some(any_name) = &self.any_name {
            listed.extend(any_name.list_exports()?);
        }
        Ok(listed)
    }
}

/// Serve one client from greeting to disconnect. Errors end only this connection.
pub fn serve(server: &Server, transport: Transport, id: u64) {
    let deadline = server
        .options
        .handshake_timeout
        .and_then(|timeout| HandshakeDeadline::arm(&transport, timeout, id));
    crate::runtime::peer::serve_peer(Arc::new(transport.peer()));
    let table = server.exports.current();
    // nbdkit: later clients of a serialize_connections export wait before the greeting.
    let _one_at_a_time = table.sole().and_then(|export| export.lock_connection());
    // Under --tls=require, preconnect waits for STARTTLS (handshake.rs).
    if server.options.tls.mode() != crate::config::TlsMode::Require {
        if let Err(e) = table.preconnect() {
            return log::debug!(server.log, "connection {id}: refused before the greeting: {e}");
        }
    }
    let negotiated = if server.options.oldstyle {
        handshake::oldstyle(server, transport)
    } else {
        handshake::negotiate(server, transport)
    };
    if deadline.is_some_and(|deadline| !deadline.disarm()) {
        return log::debug!(server.log, "connection {id}: dropped: negotiation outlasted --timeout");
    }
    match negotiated {
        Ok(Some((negotiated, transport))) => transmission::run(server, negotiated, &transport, id),
        Ok(None) => log::debug!(server.log, "connection {id}: ended during option haggling"),
        Err(e) => log::debug!(server.log, "connection {id}: {e}"),
    }
}

/// `--timeout` (nbdkit ≥ 1.42): from accepting a client to the end of negotiation, TLS
/// included. A watcher thread stops reading from the client when the time is up, so the
/// negotiation sees end of file wherever it waits; ending in time defuses it.
struct HandshakeDeadline(Arc<(Mutex<Negotiation>, Condvar)>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Negotiation {
    Running,
    Ended,
    TimedOut,
}

impl HandshakeDeadline {
    /// None for a client on stdin (-s), which has no socket to stop reading from.
    fn arm(transport: &Transport, timeout: Duration, id: u64) -> Option<HandshakeDeadline> {
        let hang_up = transport.hang_up_handle().ok().flatten()?;
        let state = Arc::new((Mutex::new(Negotiation::Running), Condvar::new()));
        let watched = state.clone();
        let watcher = std::thread::Builder::new()
            .name(format!("deadline-{id}"))
            .spawn(move || {
                let (negotiation, ended) = &*watched;
                let running = negotiation.lock().unwrap_or_else(|p| p.into_inner());
                let (mut negotiation, _) = ended
                    .wait_timeout_while(running, timeout, |n| *n == Negotiation::Running)
                    .unwrap_or_else(|p| p.into_inner());
                if *negotiation == Negotiation::Running {
                    *negotiation = Negotiation::TimedOut;
                    hang_up.hang_up();
                }
            });
        watcher.ok().map(|_| HandshakeDeadline(state))
    }

    /// Negotiation ended; false if the deadline had passed first.
    fn disarm(self) -> bool {
        let (negotiation, ended) = &*self.0;
        let mut negotiation = negotiation.lock().unwrap_or_else(|p| p.into_inner());
        if *negotiation == Negotiation::TimedOut {
            return false;
        }
        *negotiation = Negotiation::Ended;
        ended.notify_one();
        true
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
