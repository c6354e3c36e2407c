//! nbdbox: an nbdkit-compatible NBD server whose plugins and filters are sandboxed
//! WebAssembly components.
//!
//! A request travels one way:
//!
//! ```text
//!   socket ─► server (handshake, transmission) ─► protocol (decode, validate)
//!          ─► backend (gate: validation, emulation) ─► runtime (component instance)
//!          ─► [filter ─next─► backend gate ─► …] ─► plugin ─► protocol (encode) ─► socket
//! ```
//!
//! * [`protocol`]: the NBD wire codec; pure, no I/O.
//! * [`server`]: listeners, the transport, option haggling, the transmission loop.
//! * [`backend`]: nbdkit's backend layer: per-layer contexts and the gate between layers.
//! * [`runtime`]: wasmtime: components, instances, the host side of the WIT interfaces.
//! * [`api`]: the values that cross between layers, free of WIT and wasmtime.
//! * [`config`], [`cli`]: what to run, and the command line (or the TOML file, `config::file`)
//!   that says so.
//! * [`lifecycle`]: the process: startup order, daemonizing, `--run`, exit.
//! * [`shutdown`], [`log`]: values handed down to whatever needs them.
//! * `libssl`: OpenSSL, loaded when TLS or an https URL first needs it.

pub mod api;
pub mod backend;
pub mod cli;
pub mod config;
#[cfg(libssl_on_demand)]
pub mod libssl;
pub mod lifecycle;
pub mod log;
pub mod parse;
pub mod password;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod shutdown;
