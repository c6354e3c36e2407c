//! Pure codec for the NBD wire protocol as nbdkit speaks it (fixed newstyle, structured
//! replies, `base:allocation`; no extended headers).
//!
//! It turns bytes the connection handler has already read into typed values, validates them
//! with nbdkit's rules, and builds reply bytes for the handler to send. It performs no I/O,
//! holds no connection state and knows nothing of plugins: sockets, TLS, option budgets and
//! the decision what to answer belong to the caller.
//!
//! * [`consts`]: magic numbers, option/reply/info/command/flag/chunk values, error values
//!   and nbdkit's limits.
//! * [`handshake`]: greeting, client flags, option headers and payloads, option replies,
//!   meta-context query matching.
//! * [`transmission`]: request headers, simple and structured replies, extent normalisation.
//! * [`validate`]: per-request checks in nbdkit's order.
//! * [`error`]: reply error values and connection-ending protocol errors.

pub mod consts;
pub mod error;
pub mod handshake;
pub mod transmission;
pub mod validate;
mod wire;

pub use error::{NbdError, ProtocolError};
