//! The client whose requests the calls on this thread serve, for `host.peer-name`,
//! `host.is-tls` and `host.peer-tls-dn` (nbdkit's nbdkit_peer_name, nbdkit_is_tls,
//! nbdkit_peer_tls_dn). The server names it on each connection's threads, again after
//! STARTTLS; calls into components, nested ones included, run on the thread of the request
//! they serve.

use crate::server::tls::TlsPeer;
use std::cell::RefCell;
use std::sync::Arc;

/// What a component may learn about its client.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// `IP:PORT`, `unix`, or none on stdin.
    pub name: Option<String>,
    /// Set once the connection is encrypted.
    pub tls: Option<TlsPeer>,
    /// A Unix socket client's pid, uid and gid.
    pub credentials: Option<(u32, u32, u32)>,
}

thread_local! {
    static PEER: RefCell<Option<Arc<Peer>>> = const { RefCell::new(None) };
}

/// From now on, calls on this thread serve `peer`.
pub fn serve_peer(peer: Arc<Peer>) {
    PEER.with_borrow_mut(|current| *current = Some(peer));
}

pub(crate) fn current() -> Option<Arc<Peer>> {
    PEER.with_borrow(|peer| peer.clone())
}
