//! Connection handling: listeners, the option-haggling driver and the transmission loop.
//! Sockets and threads live here; the bytes on the wire are `protocol`'s business.
//!
//! Threads, nbdkit style: one per connection, plus `-t` workers for a parallel plugin, each
//! reading a request, calling the plugin inline and writing the reply. A per-request hand-off
//! to another thread would cost 6–13 µs on two cores; an inline component call costs 0.2 µs.

mod handshake;
pub mod listener;
mod transmission;

use crate::chain::Chain;
use crate::log;
use std::io::{Read, Write};

/// What every connection needs to know about the server.
pub struct ServerConfig {
    pub chain: Chain,
    pub readonly: bool,
    /// --no-sr: refuse structured replies.
    pub no_structured_replies: bool,
    /// --mask-handshake: which handshake flags to offer.
    pub handshake_mask: u16,
    /// -t: worker threads per connection for a parallel plugin.
    pub threads: usize,
}

/// Serve one client from handshake to disconnect. Errors end only this connection.
pub fn serve<R: Read + Send, W: Write + Send>(config: &ServerConfig, mut reader: R, mut writer: W, id: u64) {
    match handshake::negotiate(config, &mut reader, &mut writer) {
        Ok(Some(negotiated)) => transmission::run(config, negotiated, reader, writer, id),
        Ok(None) => log::debug!("connection {id}: ended during option haggling"),
        Err(e) => log::debug!("connection {id}: {e}"),
    }
}
