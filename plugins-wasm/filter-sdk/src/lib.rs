//! The nbdbox filter SDK: the plugin SDK ([`nbdbox_sdk`], re-exported whole) plus the
//! `nbd-filter` world, in which a filter exports the plugin operations and imports the same
//! interface as [`next`], the layer below.
//!
//! A separate crate, because a plugin must not carry the filter world's type information (it
//! would then import `next`). The shared interfaces (types, host, buffers, grants) are the
//! plugin SDK's own, so one set of types serves both.
//!
//! ```ignore
//! use nbdbox_filter_sdk::filter::{Guest, GuestConnection};
//! use nbdbox_filter_sdk::next;
//! struct MyFilter;
//! impl Guest for MyFilter { type Connection = MyConnection; /* forward to next::... */ }
//! nbdbox_filter_sdk::export_filter!(MyFilter);
//! ```

pub use nbdbox_sdk::*;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "nbd-filter",
        pub_export_macro: true,
        export_macro_name: "export_filter",
        default_bindings_module: "::nbdbox_filter_sdk::bindings",
        runtime_path: "::nbdbox_sdk::__wit_bindgen::rt",
        with: {
            "nbdbox:plugin/types@0.1.0": nbdbox_sdk::bindings::nbdbox::plugin::types,
            "nbdbox:plugin/host@0.1.0": nbdbox_sdk::bindings::nbdbox::plugin::host,
            "nbdbox:plugin/buffers@0.1.0": nbdbox_sdk::bindings::nbdbox::plugin::buffers,
            "nbdbox:plugin/grants@0.1.0": nbdbox_sdk::bindings::nbdbox::plugin::grants,
        },
    });
}

/// Register the filter type: `nbdbox_filter_sdk::export_filter!(MyFilter);`.
pub use bindings::export_filter;

/// The layer below: its global calls (`config`, `get_ready`, ...) and its [`next::Connection`].
pub mod next {
    pub use crate::bindings::nbdbox::plugin::plugin::*;
}

/// What the filter exports: the same operations as a plugin.
pub mod filter {
    pub use crate::bindings::exports::nbdbox::plugin::plugin::{Connection, ConnectionBorrow, Guest, GuestConnection};
}

/// Write the [`filter::GuestConnection`] methods that only pass a call to the layer below, for
/// a connection type with a method `$next(&self) -> &next::Connection`:
///
/// ```ignore
/// impl GuestConnection for MyConnection {
///     fn open(readonly: bool, export_name: String) -> Result<Connection> { ... }
///     fn pread(&self, ...) -> Result<()> { ... } // the calls this filter changes
///     nbdbox_filter_sdk::forward!(next; prepare, finalize, get_size, capabilities, flush);
/// }
/// ```
#[macro_export]
macro_rules! forward {
    ($next:ident; $($method:ident),* $(,)?) => { $( $crate::forward!(@one $next $method); )* };
    (@one $next:ident prepare) => {
        fn prepare(&self) -> $crate::Result<()> { self.$next().prepare() }
    };
    (@one $next:ident finalize) => {
        fn finalize(&self) -> $crate::Result<()> { self.$next().finalize() }
    };
    (@one $next:ident get_size) => {
        fn get_size(&self) -> $crate::Result<u64> { self.$next().get_size() }
    };
    (@one $next:ident export_description) => {
        fn export_description(&self) -> Option<String> { self.$next().export_description() }
    };
    (@one $next:ident capabilities) => {
        fn capabilities(&self) -> $crate::Result<$crate::Capabilities> { self.$next().capabilities() }
    };
    (@one $next:ident block_size) => {
        fn block_size(&self) -> $crate::Result<Option<$crate::BlockSize>> { self.$next().block_size() }
    };
    (@one $next:ident pread) => {
        fn pread(&self, dst: &$crate::ReadBuf, count: u32, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$next().pread(dst, count, offset, flags)
        }
    };
    (@one $next:ident pwrite) => {
        fn pwrite(&self, src: &$crate::WriteBuf, count: u32, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$next().pwrite(src, count, offset, flags)
        }
    };
    (@one $next:ident flush) => {
        fn flush(&self, flags: $crate::CmdFlags) -> $crate::Result<()> { self.$next().flush(flags) }
    };
    (@one $next:ident trim) => {
        fn trim(&self, count: u32, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$next().trim(count, offset, flags)
        }
    };
    (@one $next:ident zero) => {
        fn zero(&self, count: u32, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$next().zero(count, offset, flags)
        }
    };
    (@one $next:ident extents) => {
        fn extents(&self, count: u32, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<Vec<$crate::Extent>> {
            self.$next().extents(count, offset, flags)
        }
    };
    (@one $next:ident cache) => {
        fn cache(&self, count: u32, offset: u64, flags: $crate::CmdFlags) -> $crate::Result<()> {
            self.$next().cache(count, offset, flags)
        }
    };
}

/// Write the global [`filter::Guest`] calls a filter passes down unchanged, by name:
/// `config` (every key goes to the layer below), `config_complete`, `get_ready` (the layer
/// below first) and `list_exports`.
///
/// ```ignore
/// impl Guest for MyFilter {
///     fn describe() -> PluginInfo { ... }
///     nbdbox_filter_sdk::forward_globals!(config, config_complete, get_ready, list_exports);
/// }
/// ```
#[macro_export]
macro_rules! forward_globals {
    ($($call:ident),* $(,)?) => { $( $crate::forward_globals!(@one $call); )* };
    (@one config) => {
        fn config(key: String, value: String) -> $crate::Result<()> {
            $crate::next::config(&key, &value)
        }
    };
    (@one config_complete) => {
        fn config_complete() -> $crate::Result<()> {
            $crate::next::config_complete()
        }
    };
    (@one get_ready) => {
        fn get_ready() -> $crate::Result<()> {
            $crate::next::get_ready()
        }
    };
    (@one list_exports) => {
        fn list_exports(readonly: bool) -> $crate::Result<Vec<$crate::Export>> {
            $crate::next::list_exports(readonly)
        }
    };
}
