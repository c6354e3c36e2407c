//! nbdbox: an nbdkit-compatible NBD server whose plugins are sandboxed WebAssembly components.
//!
//! ```text
//!   socket ─► server (handshake, transmission) ─► protocol (decode, validate)
//!          ─► chain (context, emulation) ─► runtime (component instance) ─► reply ─► socket
//! ```
//! `protocol` is pure (no I/O); `server` owns sockets and threads; `chain` is the layers a
//! request goes through; `runtime` hosts the components; `lifecycle` is the process.

pub mod chain;
pub mod cli;
pub mod lifecycle;
pub mod log;
pub mod parse;
pub mod protocol;
pub mod runtime;
pub mod server;
