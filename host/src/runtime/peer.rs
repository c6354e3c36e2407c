//! The client whose requests the calls on this thread serve, for `host.peer-name` (nbdkit's
//! nbdkit_peer_name). The server names it on each connection's threads; calls into
//! components, nested ones included, run on the thread of the request they serve.

use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static PEER: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// From now on, calls on this thread serve `peer` (None: no client, or one on stdin).
pub fn serve_peer(peer: Option<Arc<str>>) {
    PEER.with_borrow_mut(|current| *current = peer);
}

pub(crate) fn current() -> Option<String> {
    PEER.with_borrow(|peer| peer.as_deref().map(str::to_owned))
}
