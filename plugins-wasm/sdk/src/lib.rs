//! The nbdbox plugin SDK: everything a guest plugin needs, in one dependency.
//!
//! A plugin is two types with nbdkit's defaults (nbdkit-plugin(3)): a [`Plugin`] (its metadata
//! and configuration, one value per instance) and a [`Connection`] (one value per client
//! connection, made by [`Plugin::open`]). Only `NAME`, `open`, `get_size` and `pread` are
//! required; a method left out behaves as the nbdkit callback left out, and the capabilities a
//! connection reports follow from which methods it has (write it under
//! `#[nbdbox_sdk::connection]`, which records them in [`Connection::IMPLEMENTS`]):
//!
//! ```no_run
//! use nbdbox_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Zeros;
//!
//! impl Plugin for Zeros {
//!     const NAME: &'static str = "zeros";
//!     type Connection = ZerosConnection;
//!     fn open(&self, _readonly: bool, _export_name: &str) -> Result<ZerosConnection> {
//!         Ok(ZerosConnection)
//!     }
//! }
//!
//! struct ZerosConnection;
//!
//! #[nbdbox_sdk::connection]
//! impl Connection for ZerosConnection {
//!     fn get_size(&self) -> Result<u64> {
//!         Ok(1 << 20)
//!     }
//!     fn pread(&self, dst: &ReadBuf, count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
//!         dst.zero(0, count);
//!         Ok(())
//!     }
//! }
//!
//! nbdbox_sdk::plugin!(Zeros);
//! ```
//!
//! The host checks every request before a component sees it (in range, non-zero count, flags
//! and command the layer advertised) and emulates what a plugin only emulates, so callbacks
//! need no checks of their own. Beyond the traits the SDK re-exports the WIT types and adds the
//! helpers plugins repeat: error constructors, logging, nbdkit-style parsing of config values
//! that names the key, and checked `u64` → `usize` conversion (wasm32's `usize` is 32 bits, so
//! `offset as usize` silently truncates NBD offsets: do range arithmetic in `u64` and convert
//! with [`to_usize`]).
//!
//! Components are single-threaded and never re-entered: the plugin value lives in the SDK
//! (made with `Default` on first use), and a connection keeps whatever it needs of it (an
//! `Rc` clone, a copy of the settings).

extern crate self as nbdbox_sdk;

mod plugin;

#[doc(hidden)]
pub mod layer;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The raw generated bindings; plugins use the traits and re-exports below.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "nbd-plugin",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        default_bindings_module: "::nbdbox_sdk::bindings",
        runtime_path: "::nbdbox_sdk::__wit_bindgen::rt",
    });
}

pub use bindings::nbdbox::plugin::buffers::{ReadBuf, WriteBuf};
pub use bindings::nbdbox::plugin::types::{
    BlockSize, CacheMode, Capabilities, CmdFlags, Errno, Error, Export, Extent, ExtentFlags, FuaMode, ThreadModel,
    ZeroMode,
};
/// Place on `impl Connection for X { ... }`: records which optional methods `X` defines, so
/// that the default [`Connection::capabilities`] reports what nbdkit would.
pub use nbdbox_sdk_macros::connection;
#[doc(hidden)]
pub use plugin::Adapter;
pub use plugin::{Connection, Implements, Plugin};

/// Files and directories the host opened for config keys of kind [`Kind::File`] /
/// [`Kind::Directory`]: the only way a component reaches the host filesystem.
pub mod grants {
    pub use crate::bindings::nbdbox::plugin::grants::{
        exists, open_directory, open_file, scratch_file, Advice, Directory, File,
    };
}

/// Remote objects over HTTP(S), at origins granted by config keys of kind [`Kind::Url`].
pub mod http {
    pub use crate::bindings::nbdbox::plugin::http::{open, Header, Method, Object, Options, Origin, Response};
}

/// Byte streams to endpoints granted by config keys of kind [`Kind::NbdUri`],
/// [`Kind::UnixSocket`] or [`Kind::TcpHost`].
pub mod streams {
    pub use crate::bindings::nbdbox::plugin::streams::{connect, Socket};
}

/// The raw host services (prefer the wrappers at the crate root).
pub mod host {
    pub use crate::bindings::nbdbox::plugin::host::{
        counter_add, debug_flag, is_tls, log, memory_limit, parse_bool, parse_size, peer_credentials, peer_name,
        peer_tls_dn, peer_tls_issuer_dn, shutdown, sleep, Credentials, LogLevel,
    };
}

pub use host::{
    counter_add, debug_flag, is_tls, memory_limit, peer_credentials, peer_name, peer_tls_dn, peer_tls_issuer_dn,
    shutdown, sleep, Credentials, LogLevel,
};

/// What most plugins use: `use nbdbox_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        errno, error, BlockSize, CacheMode, Capabilities, CmdFlags, Connection, Errno, Error, Export, Extent,
        ExtentFlags, FuaMode, Key, Kind, Plugin, ReadBuf, Result, ThreadModel, WriteBuf, ZeroMode,
    };
}

/// Result with the WIT [`Error`] as the default error type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What a config key's value is; `File` and `Directory` keys are capability grants the host
/// opens for the component (see [`grants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any string.
    Text,
    /// nbdkit's size syntax: read it with [`parse_size`].
    Size,
    /// nbdkit's boolean syntax: read it with [`parse_bool`].
    Bool,
    /// A file the host opens (read-only under -r): [`grants::open_file`].
    File,
    /// A file the host creates if missing and opens for appending (a log): open it with
    /// [`grants::open_file`], write with `append`.
    OutputFile,
    /// A directory the host opens: [`grants::open_directory`].
    Directory,
    /// A file, or a directory, the host opens read-only whatever `-r` says: for what a
    /// component reads and must never change (a CA bundle, credentials).
    InputFile,
    InputDirectory,
    /// A path whose existence the component may test: [`grants::exists`].
    TriggerFile,
    /// An http(s) URL whose origin the plugin may reach: [`http::open`].
    Url,
    /// An `nbd://` or `nbd+unix://` URI whose server the plugin may connect to:
    /// [`streams::connect`].
    NbdUri,
    /// A Unix socket the plugin may connect to: [`streams::connect`].
    UnixSocket,
    /// A host and a port the plugin may connect to together: [`streams::connect`].
    TcpHost,
    TcpPort,
    /// A secret, read by the host as nbdkit reads passwords (`+FILE`, `-`, `-FD`, or the value
    /// itself): `config` gets the secret.
    Password,
}

impl Kind {
    /// The WIT spelling (`config-key.kind` is a string so that kinds can be added in a patch
    /// release; see wit/VERSIONING.md).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Size => "size",
            Kind::Bool => "bool",
            Kind::File => "file",
            Kind::OutputFile => "output-file",
            Kind::Directory => "directory",
            Kind::InputFile => "input-file",
            Kind::InputDirectory => "input-directory",
            Kind::TriggerFile => "trigger-file",
            Kind::Url => "url",
            Kind::NbdUri => "nbd-uri",
            Kind::UnixSocket => "unix-socket",
            Kind::TcpHost => "tcp-host",
            Kind::TcpPort => "tcp-port",
            Kind::Password => "password",
        }
    }
}

/// One config key a component accepts, as `--help` shows it: declared once, in a const.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Key {
    pub const fn new(name: &'static str, kind: Kind, help: &'static str) -> Key {
        Key { name, kind, help }
    }
}

/// An error with a message for the operator's log.
pub fn error(errno: Errno, message: impl Into<String>) -> Error {
    Error {
        errno,
        message: Some(message.into()),
    }
}

/// An error without a message.
pub fn errno(errno: Errno) -> Error {
    Error { errno, message: None }
}

/// The error for a config key the component does not know (EINVAL, names the key).
pub fn unknown_key(key: &str) -> Error {
    error(Errno::Einval, format!("unknown parameter '{key}'"))
}

/// Log through the host (tagged with the component's name there).
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// nbdkit_debug: shown only when the server runs verbose.
pub fn debug(message: &str) {
    host::log(LogLevel::Debug, message);
}

/// An informational message.
pub fn info(message: &str) {
    host::log(LogLevel::Info, message);
}

/// A warning.
pub fn warning(message: &str) {
    host::log(LogLevel::Warning, message);
}

/// nbdkit_error: log an error (returning an [`Error`] is still how a call fails).
pub fn log_error(message: &str) {
    host::log(LogLevel::Error, message);
}

/// nbdkit_parse_size for config key `key`; the error reads "KEY: cannot parse 'VALUE': WHY".
pub fn parse_size(key: &str, value: &str) -> Result<u64> {
    host::parse_size(value).map_err(|why| cannot_parse(key, value, &why))
}

/// nbdkit_parse_bool for config key `key`; the error names the key like [`parse_size`].
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    host::parse_bool(value).map_err(|why| cannot_parse(key, value, &why))
}

fn cannot_parse(key: &str, value: &str, why: &str) -> Error {
    error(Errno::Einval, format!("{key}: cannot parse '{value}': {why}"))
}

/// `u64` → `usize` without truncation (EOVERFLOW when it does not fit in wasm32's 32 bits).
pub fn to_usize(value: u64) -> Result<usize> {
    usize::try_from(value).map_err(|_| {
        error(
            Errno::Eoverflow,
            format!("{value} does not fit in this component's address space"),
        )
    })
}

/// The most bytes [`in_chunks`] hands out at once.
pub const CHUNK: u32 = 1 << 20;

thread_local! {
    /// [`in_chunks`]'s buffer, kept between requests: a plugin that builds its data in
    /// component memory neither allocates nor zeroes a buffer per read.
    static SCRATCH: core::cell::RefCell<Vec<u8>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// Walk a request of `count` bytes at `offset` in pieces of at most [`CHUNK`] bytes of
/// component memory: `each(chunk, at, chunk_offset)` gets the piece starting `at` bytes into
/// the request, `chunk_offset` on the disk. The chunk holds whatever an earlier call left
/// there, so `each` writes all of it before it reads any; `each` must not call `in_chunks`.
pub fn in_chunks(count: u32, offset: u64, mut each: impl FnMut(&mut [u8], u32, u64) -> Result<()>) -> Result<()> {
    SCRATCH.with_borrow_mut(|scratch| {
        let largest = count.min(CHUNK) as usize;
        if scratch.len() < largest {
            scratch.resize(largest, 0);
        }
        let mut at = 0;
        while at < count {
            let n = (count - at).min(CHUNK);
            each(&mut scratch[..n as usize], at, offset + u64::from(at))?;
            at += n;
        }
        Ok(())
    })
}

/// `offset + count` checked in `u64` (EOVERFLOW on wrap-around).
pub fn end_of(offset: u64, count: u64) -> Result<u64> {
    offset
        .checked_add(count)
        .ok_or_else(|| error(Errno::Eoverflow, format!("offset {offset} + {count} overflows")))
}
