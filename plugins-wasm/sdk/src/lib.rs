//! The nbdbox plugin SDK: everything a guest component needs, in one dependency.
//!
//! It holds the crate's only `wit_bindgen::generate!` for `wit/nbdbox.wit` (world `nbd-plugin`),
//! re-exports the generated types under short paths, and adds the small helpers every plugin
//! repeats: error constructors, logging, nbdkit-style parsing of config values that names the
//! key, and checked `u64` → `usize` conversion (wasm32's `usize` is 32 bits, so `offset as usize`
//! silently truncates NBD offsets; do range arithmetic in `u64` and convert with [`to_usize`]).
//!
//! A plugin implements [`plugin::Guest`] (the global callbacks) and [`plugin::GuestConnection`]
//! (one value per client connection, created by `open`), then registers them:
//!
//! ```ignore
//! use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
//! struct MyPlugin;
//! impl Guest for MyPlugin { type Connection = MyConnection; /* ... */ }
//! nbdbox_sdk::export_plugin!(MyPlugin);
//! ```
//!
//! Components are single-threaded: keep global state in a `thread_local!` or a `Mutex` static.

extern crate self as nbdbox_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The raw generated bindings; plugins use the re-exports below.
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

/// Register the plugin type: `nbdbox_sdk::export_plugin!(MyPlugin);` (once, in the cdylib).
pub use bindings::export_plugin;
pub use bindings::nbdbox::plugin::buffers::{ReadBuf, WriteBuf};
pub use bindings::nbdbox::plugin::types::{
    BlockSize, CacheMode, Capabilities, CmdFlags, ConfigKey, ConfigKind, Errno, Error, Export, Extent, ExtentFlags,
    FuaMode, PluginInfo, ThreadModel, ZeroMode,
};

/// What the component exports: the traits a plugin implements and the connection handle.
pub mod plugin {
    pub use crate::bindings::exports::nbdbox::plugin::plugin::{Connection, ConnectionBorrow, Guest, GuestConnection};
}

/// Files and directories the host opened for config keys of kind `file` / `directory`.
pub mod grants {
    pub use crate::bindings::nbdbox::plugin::grants::{open_directory, open_file, Advice, Directory, File};
}

/// The raw host services (prefer the wrappers at the crate root).
pub mod host {
    pub use crate::bindings::nbdbox::plugin::host::{
        log, memory_limit, parse_bool, parse_size, shutdown, sleep, LogLevel,
    };
}

pub use host::{memory_limit, shutdown, sleep, LogLevel};

/// Result with the WIT [`Error`] as the default error type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

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

/// The error for a config key the plugin does not know (EINVAL, names the key).
pub fn unknown_key(key: &str) -> Error {
    error(Errno::Einval, format!("unknown parameter '{key}'"))
}

/// Shorthand for one entry of [`PluginInfo::config_keys`].
pub fn config_key(name: &str, kind: ConfigKind, help: &str) -> ConfigKey {
    ConfigKey {
        name: name.into(),
        kind,
        help: help.into(),
    }
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
    host::parse_size(value).map_err(|why| error(Errno::Einval, format!("{key}: cannot parse '{value}': {why}")))
}

/// nbdkit_parse_bool for config key `key`; the error names the key like [`parse_size`].
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    host::parse_bool(value).map_err(|why| error(Errno::Einval, format!("{key}: cannot parse '{value}': {why}")))
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

/// `offset + count` checked in `u64` (EOVERFLOW on wrap-around).
pub fn end_of(offset: u64, count: u64) -> Result<u64> {
    offset
        .checked_add(count)
        .ok_or_else(|| error(Errno::Eoverflow, format!("offset {offset} + {count} overflows")))
}

impl Default for Capabilities {
    /// Nothing supported: a read-only disk with no flush, trim, zero, extents or cache.
    fn default() -> Self {
        Capabilities {
            can_write: false,
            can_flush: false,
            is_rotational: false,
            can_trim: false,
            can_zero: ZeroMode::None,
            can_fast_zero: false,
            can_extents: false,
            can_fua: FuaMode::None,
            can_multi_conn: false,
            can_cache: CacheMode::None,
        }
    }
}

/// Write the [`plugin::GuestConnection`] methods of calls a plugin does not support (and
/// whose capability it reports as absent, so the host never sends them): write-class calls
/// fail with EROFS, the others with EINVAL.
///
/// ```ignore
/// impl GuestConnection for MyConnection {
///     fn pread(&self, ...) -> Result<()> { ... }
///     nbdbox_sdk::not_supported!(pwrite, flush, trim, zero, extents, cache);
/// }
/// ```
#[macro_export]
macro_rules! not_supported {
    ($($method:ident),* $(,)?) => { $( $crate::not_supported!(@one $method); )* };
    (@one pwrite) => {
        fn pwrite(&self, _: &$crate::WriteBuf, _: u32, _: u64, _: $crate::CmdFlags) -> $crate::Result<()> {
            Err($crate::error($crate::Errno::Erofs, "pwrite: the export is read-only"))
        }
    };
    (@one trim) => {
        fn trim(&self, _: u32, _: u64, _: $crate::CmdFlags) -> $crate::Result<()> {
            Err($crate::error($crate::Errno::Erofs, "trim: the export is read-only"))
        }
    };
    (@one zero) => {
        fn zero(&self, _: u32, _: u64, _: $crate::CmdFlags) -> $crate::Result<()> {
            Err($crate::error($crate::Errno::Erofs, "zero: the export is read-only"))
        }
    };
    (@one flush) => {
        fn flush(&self, _: $crate::CmdFlags) -> $crate::Result<()> {
            Err($crate::error($crate::Errno::Einval, "flush is not supported"))
        }
    };
    (@one extents) => {
        fn extents(&self, _: u32, _: u64, _: $crate::CmdFlags) -> $crate::Result<Vec<$crate::Extent>> {
            Err($crate::error($crate::Errno::Einval, "extents are not supported"))
        }
    };
    (@one cache) => {
        fn cache(&self, _: u32, _: u64, _: $crate::CmdFlags) -> $crate::Result<()> {
            Err($crate::error($crate::Errno::Einval, "cache is not supported"))
        }
    };
    (@one prepare) => {
        fn prepare(&self) -> $crate::Result<()> {
            Ok(())
        }
    };
    (@one finalize) => {
        fn finalize(&self) -> $crate::Result<()> {
            Ok(())
        }
    };
}
