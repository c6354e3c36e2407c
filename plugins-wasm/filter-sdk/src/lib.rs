//! The nbdbox filter SDK: a filter names only what it changes, and everything else passes to
//! the layer below, as with nbdkit-filter(3).
//!
//! A filter is a [`Filter`] (metadata, configuration, how to open the layer below) and a
//! [`FilterConnection`] (one value per client connection). Every method of both has a default
//! that hands the call to the layer below: [`Next`] for connection calls, [`next`] for the
//! global ones. A filter that changes nothing per connection uses `()`:
//!
//! ```no_run
//! use nbdbox_filter_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Passthrough;
//!
//! impl Filter for Passthrough {
//!     const NAME: &'static str = "passthrough";
//!     type Connection = ();
//!     fn open(&self, _: &Next, _: bool, _: &str) -> Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! nbdbox_filter_sdk::filter!(Passthrough);
//! ```
//!
//! A separate crate from the plugin SDK, because a plugin must not carry the filter world (it
//! would then import `next`). The shared interfaces (types, host, buffers, grants) are the
//! plugin SDK's own, so one set of types and helpers serves both.

use std::cell::RefCell;
use std::marker::PhantomData;

#[doc(hidden)]
pub use nbdbox_sdk::layer;
use nbdbox_sdk::layer::{Meta, Version};
pub use nbdbox_sdk::{
    counter_add, debug, end_of, errno, error, grants, host, info, is_tls, log, log_error, memory_limit, parse_bool,
    parse_size, peer_credentials, peer_name, peer_tls_dn, peer_tls_issuer_dn, shutdown, sleep, to_usize, unknown_key,
    warning, BlockSize, CacheMode, Capabilities, CmdFlags, Errno, Error, Export, Extent, ExtentFlags, FuaMode, Key,
    Kind, LogLevel, ReadBuf, Result, ThreadModel, WriteBuf, ZeroMode,
};

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
            "nbdbox:plugin/types@0.2.1": nbdbox_sdk::bindings::nbdbox::plugin::types,
            "nbdbox:plugin/host@0.2.1": nbdbox_sdk::bindings::nbdbox::plugin::host,
            "nbdbox:plugin/buffers@0.2.1": nbdbox_sdk::bindings::nbdbox::plugin::buffers,
            "nbdbox:plugin/grants@0.2.1": nbdbox_sdk::bindings::nbdbox::plugin::grants,
        },
    });
}

use bindings::exports::nbdbox::plugin::plugin::{Connection as Handle, Guest, GuestConnection, PluginInfo};

/// The layer below, as the host links it: its global calls (`config`, `list_exports`, ...)
/// and its [`next::Connection`]. Connection calls go through [`Next`] instead.
pub mod next {
    pub use crate::bindings::nbdbox::plugin::plugin::*;
}

/// What most filters use: `use nbdbox_filter_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        errno, error, next, BlockSize, CacheMode, Capabilities, CmdFlags, Errno, Error, Export, Extent, ExtentFlags,
        Filter, FilterConnection, FuaMode, Key, Kind, Next, ReadBuf, Result, ThreadModel, WriteBuf, ZeroMode,
    };
}

/// A filter as a whole: its metadata, its configuration, and how it opens the layer below.
///
/// Like a plugin's, the value lives in the SDK: made with `Default` before the first key,
/// borrowed mutably while configuring, getting ready and cleaning up, shared otherwise.
pub trait Filter: Default + 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str = "";
    /// The keys the filter handles; `--help` lists them.
    const CONFIG_KEYS: &'static [Key] = &[];
    /// The most concurrency the filter allows; the host combines it with the layers below.
    const THREAD_MODEL: ThreadModel = ThreadModel::Parallel;
    /// True when every connection must reach this one instance (see nbdbox_sdk::Plugin).
    const SHARED_STATE: bool = false;

    type Connection: FilterConnection;

    /// Keys declared in `CONFIG_KEYS` come here; every other key goes to the layer below
    /// without the filter seeing it. Default (and the way to pass a declared key down
    /// anyway): `next::config`.
    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        next::config(key, value)
    }

    /// After the last key; the adapter then calls the layer below's `config_complete`.
    fn config_complete(&mut self) -> Result<()> {
        Ok(())
    }

    /// nbdkit's `.thread_model`: lower `THREAD_MODEL` once the configuration is known.
    fn thread_model(&self) -> ThreadModel {
        Self::THREAD_MODEL
    }

    /// The host calls every layer's get-ready itself, the plugin first: never chain it.
    fn get_ready(&mut self) -> Result<()> {
        Ok(())
    }

    /// Once, when the server exits (the host calls every layer's).
    fn cleanup(&mut self) {}

    fn preconnect(&self, readonly: bool) -> Result<()> {
        next::preconnect(readonly)
    }

    fn list_exports(&self, readonly: bool) -> Result<Vec<Export>> {
        next::list_exports(readonly)
    }

    fn default_export(&self, readonly: bool) -> Option<String> {
        next::default_export(readonly)
    }

    /// How to open the layer below for a client opening (`readonly`, `export_name`): nbdkit's
    /// `next_open` arguments (a copy-on-write filter opens it read-only). It runs before
    /// [`Filter::open`], so opens complete from the plugin outwards.
    fn open_next(&self, readonly: bool, export_name: &str) -> Result<next::Connection> {
        next::Connection::open(readonly, export_name)
    }

    /// False to leave the layer below closed for this client: nbdkit lets a filter's open skip
    /// `next_open` (filters/tls-fallback/tls-fallback.c answers plaintext clients without
    /// reaching the plugin). [`Next::is_open`] is then false and calls to it fail with EIO.
    fn opens_next(&self, _readonly: bool, _export_name: &str) -> bool {
        true
    }

    /// This filter's part of the client's open, with the layer below already open (unless
    /// [`Filter::opens_next`] kept it closed).
    fn open(&self, next: &Next, readonly: bool, export_name: &str) -> Result<Self::Connection>;
}

/// One client connection of a filter; every method defaults to the same call on the layer
/// below. Dropping it is nbdkit's `.close`; the layer below is closed after it.
pub trait FilterConnection: 'static {
    /// The adapter has called `next.prepare()` first: prepares complete from the plugin out.
    fn prepare(&self, _next: &Next) -> Result<()> {
        Ok(())
    }

    /// The adapter calls `next.finalize()` afterwards: finalizes go from the client in.
    fn finalize(&self, _next: &Next) -> Result<()> {
        Ok(())
    }

    fn get_size(&self, next: &Next) -> Result<u64> {
        next.get_size()
    }

    fn export_description(&self, next: &Next) -> Option<String> {
        next.export_description()
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        next.capabilities()
    }

    fn block_size(&self, next: &Next) -> Result<Option<BlockSize>> {
        next.block_size()
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        next.pwrite(src, count, offset, flags)
    }

    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        next.flush(flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        next.zero(count, offset, flags)
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        next.extents(count, offset, flags)
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        next.cache(count, offset, flags)
    }
}

/// A filter with nothing of its own per connection.
impl FilterConnection for () {}

/// The layer below, for one connection. The host validates and emulates between every pair of
/// layers, so a filter's own calls here get the same checks and fallbacks as a client's.
pub struct Next {
    below: RefCell<Option<next::Connection>>,
}

impl Next {
    /// Put `below` in place of the current layer below and hand the old one back, for a
    /// filter that reopens it (filters/retry/retry.c): finalize the old one, drop it, then
    /// open and prepare a new one. While it is empty every call fails with EIO.
    pub fn replace(&self, below: Option<next::Connection>) -> Option<next::Connection> {
        self.below.replace(below)
    }

    /// False when [`Filter::opens_next`] kept the layer below closed, or [`Next::replace`] left
    /// none.
    pub fn is_open(&self) -> bool {
        self.below.borrow().is_some()
    }

    fn call<T>(&self, op: impl FnOnce(&next::Connection) -> Result<T>) -> Result<T> {
        match self.below.borrow().as_ref() {
            Some(below) => op(below),
            None => Err(error(Errno::Eio, "the layer below is not open")),
        }
    }

    /// Nothing to do when the layer below was never opened ([`Filter::opens_next`]).
    pub fn prepare(&self) -> Result<()> {
        self.below.borrow().as_ref().map_or(Ok(()), next::Connection::prepare)
    }

    /// Nothing to do when the layer below is not open: whoever emptied it finalized it.
    pub fn finalize(&self) -> Result<()> {
        self.below.borrow().as_ref().map_or(Ok(()), next::Connection::finalize)
    }

    pub fn get_size(&self) -> Result<u64> {
        self.call(next::Connection::get_size)
    }

    /// `None` also when the layer below is not open.
    pub fn export_description(&self) -> Option<String> {
        self.below
            .borrow()
            .as_ref()
            .and_then(next::Connection::export_description)
    }

    pub fn capabilities(&self) -> Result<Capabilities> {
        self.call(next::Connection::capabilities)
    }

    pub fn block_size(&self) -> Result<Option<BlockSize>> {
        self.call(next::Connection::block_size)
    }

    pub fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.call(|below| below.pread(dst, count, offset, flags))
    }

    pub fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.call(|below| below.pwrite(src, count, offset, flags))
    }

    pub fn flush(&self, flags: CmdFlags) -> Result<()> {
        self.call(|below| below.flush(flags))
    }

    pub fn trim(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.call(|below| below.trim(count, offset, flags))
    }

    pub fn zero(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.call(|below| below.zero(count, offset, flags))
    }

    pub fn extents(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.call(|below| below.extents(count, offset, flags))
    }

    pub fn cache(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.call(|below| below.cache(count, offset, flags))
    }

    /// [`Next::cache`] run later on a host thread: returns at once, so a prefetch costs the
    /// client's request nothing. A hint: nothing happens when the layer below is not open,
    /// and the host may drop it (`background.cache` in wit/background.wit).
    pub fn cache_in_background(&self, count: u64, offset: u64) {
        if let Some(below) = self.below.borrow().as_ref() {
            bindings::nbdbox::plugin::background::cache(below, count, offset);
        }
    }
}

/// The exported `plugin` interface for filter type `F`; `filter!` names it for wit-bindgen.
#[doc(hidden)]
pub struct Adapter<F>(PhantomData<F>);

/// The exported `connection` resource. The filter's value is declared first so that it drops
/// first and the layer below after it: nbdkit's close order.
#[doc(hidden)]
pub struct ConnectionAdapter<F: Filter> {
    connection: F::Connection,
    next: Next,
}

fn meta<F: Filter>() -> Meta {
    Meta {
        name: F::NAME,
        description: F::DESCRIPTION,
        magic_config_key: None,
        config_keys: F::CONFIG_KEYS,
        thread_model: F::THREAD_MODEL,
        shared_state: F::SHARED_STATE,
    }
}

impl<F: Filter + Version> Guest for Adapter<F> {
    type Connection = ConnectionAdapter<F>;

    fn describe() -> PluginInfo {
        meta::<F>().describe(F::VERSION)
    }

    fn config(key: String, value: String) -> Result<()> {
        if meta::<F>().declares(&key) {
            layer::with_mut(|filter: &mut F| filter.config(&key, &value))
        } else {
            next::config(&key, &value)
        }
    }

    fn config_complete() -> Result<()> {
        layer::with_mut(F::config_complete)?;
        next::config_complete()
    }

    nbdbox_sdk::__layer_calls!(F);
}

impl<F: Filter> GuestConnection for ConnectionAdapter<F> {
    fn open(readonly: bool, export_name: String) -> Result<Handle> {
        layer::with(|filter: &F| {
            let below = if filter.opens_next(readonly, &export_name) {
                Some(filter.open_next(readonly, &export_name)?)
            } else {
                None
            };
            let next = Next {
                below: RefCell::new(below),
            };
            let connection = filter.open(&next, readonly, &export_name)?;
            Ok(Handle::new(ConnectionAdapter::<F> { connection, next }))
        })
    }

    fn prepare(&self) -> Result<()> {
        self.next.prepare()?;
        self.connection.prepare(&self.next)
    }

    fn finalize(&self) -> Result<()> {
        self.connection.finalize(&self.next)?;
        self.next.finalize()
    }

    nbdbox_sdk::__connection_calls!(connection, next);
}

/// Register the filter type, once, in the component crate:
/// `nbdbox_filter_sdk::filter!(MyFilter);`. It exports the SDK's adapter for it and records
/// the crate's version (`CARGO_PKG_VERSION`) for `--dump-plugin`.
#[macro_export]
macro_rules! filter {
    ($filter:ty) => {
        $crate::layer::__register!($filter => $crate::Adapter<$filter>, $crate::bindings::export_filter);
    };
}
