//! The traits a plugin implements, with nbdkit's defaults (nbdkit-plugin(3)), and the adapter
//! that implements the generated WIT traits on top of them.

use std::marker::PhantomData;

use crate::bindings::exports::nbdbox::plugin::plugin::{Connection as Handle, Guest, GuestConnection};
use crate::bindings::nbdbox::plugin::types::PluginInfo;
use crate::layer::{self, Meta, Version};
use crate::{
    errno, error, unknown_key, BlockSize, CacheMode, Capabilities, CmdFlags, Errno, Export, Extent, FuaMode, Key,
    ReadBuf, Result, ThreadModel, WriteBuf, ZeroMode,
};

/// A plugin as a whole: its metadata, its configuration, and how it opens connections.
///
/// The value lives in the SDK: made with `Default` before the first `config`, borrowed
/// mutably while it is configured, made ready and cleaned up, and shared otherwise.
pub trait Plugin: Default + 'static {
    /// The name `--dump-plugin` shows (and the one users type, for a built-in plugin).
    const NAME: &'static str;
    const DESCRIPTION: &'static str = "";
    /// The key a bare command-line value is given to (`memory 1G` = `memory size=1G`).
    const MAGIC_CONFIG_KEY: Option<&'static str> = None;
    /// Every key the plugin accepts, with its kind and `--help` text.
    const CONFIG_KEYS: &'static [Key] = &[];
    /// True when keys it does not declare reach [`Plugin::config`] too, as text, instead of
    /// being refused (nbdkit's data plugin takes any other key as a `$VAR` for its
    /// expressions). Such keys are never grants.
    const ACCEPTS_OTHER_KEYS: bool = false;
    /// The most concurrency the plugin allows; [`Plugin::thread_model`] may lower it.
    const THREAD_MODEL: ThreadModel = ThreadModel::Parallel;
    /// True when every connection must reach this one instance because it keeps the disk in
    /// its own memory; false lets the host run several instances, configured alike.
    const SHARED_STATE: bool = false;

    type Connection: Connection;

    /// One `key=value`. Only keys declared in `CONFIG_KEYS` reach it: the adapter answers any
    /// other with EINVAL "unknown parameter 'KEY'" (and, when the plugin declares none, with
    /// nbdkit's "this plugin does not need command line configuration"). Default: accept,
    /// which is all a `file` or `directory` key needs (the plugin opens it through
    /// [`grants`](crate::grants)).
    fn config(&mut self, _key: &str, _value: &str) -> Result<()> {
        Ok(())
    }

    /// After the last `config`: check that required keys were given.
    fn config_complete(&mut self) -> Result<()> {
        Ok(())
    }

    /// nbdkit's `.thread_model`: lower `THREAD_MODEL` once the configuration is known.
    fn thread_model(&self) -> ThreadModel {
        Self::THREAD_MODEL
    }

    /// The last call of the configuration, before the server accepts clients.
    fn get_ready(&mut self) -> Result<()> {
        Ok(())
    }

    /// Once, when the server exits.
    fn cleanup(&mut self) {}

    /// A client connected, before the NBD greeting: an error turns it away.
    fn preconnect(&self, _readonly: bool) -> Result<()> {
        Ok(())
    }

    /// NBD_OPT_LIST. By default the one default export, under the name `default_export`
    /// gives it (nbdkit's nbdkit_use_default_export); an empty list lists nothing.
    fn list_exports(&self, readonly: bool) -> Result<Vec<Export>> {
        Ok(vec![Export {
            name: self.default_export(readonly).unwrap_or_default(),
            description: None,
        }])
    }

    /// The name the default export "" stands for; `None` keeps "".
    fn default_export(&self, _readonly: bool) -> Option<String> {
        None
    }

    /// A client opens `export_name`; `readonly` under -r, or when a filter above opens this
    /// layer read-only.
    fn open(&self, readonly: bool, export_name: &str) -> Result<Self::Connection>;
}

/// Which optional [`Connection`] methods a type defines: nbdkit derives a plugin's default
/// capabilities from which callbacks exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Implements {
    pub pwrite: bool,
    pub flush: bool,
    pub trim: bool,
    pub zero: bool,
    pub extents: bool,
    pub cache: bool,
}

impl Implements {
    pub const NONE: Implements = Implements {
        pwrite: false,
        flush: false,
        trim: false,
        zero: false,
        extents: false,
        cache: false,
    };
}

impl Capabilities {
    /// nbdkit's defaults for a plugin with these callbacks (server/plugins.c): a callback
    /// makes its command available; without `zero` the host writes zeroes (so fast zero is
    /// refused at once), without `flush` there is no FUA, without `cache` no cache.
    pub const fn implied(has: Implements) -> Capabilities {
        Capabilities {
            can_write: has.pwrite,
            can_flush: has.flush,
            is_rotational: false,
            can_trim: has.trim,
            can_zero: if has.zero { ZeroMode::Native } else { ZeroMode::Emulate },
            can_fast_zero: !has.zero,
            can_extents: has.extents,
            can_fua: if has.flush { FuaMode::Emulate } else { FuaMode::None },
            can_multi_conn: false,
            can_cache: if has.cache { CacheMode::Native } else { CacheMode::None },
        }
    }

    /// What nbdkit's server/backend.c makes of a layer that cannot write: no trim, zero,
    /// fast zero or FUA either. For a plugin that finds out at open time (a file it may only
    /// read); the host applies -r itself.
    pub fn read_only(self) -> Capabilities {
        Capabilities {
            can_write: false,
            can_trim: false,
            can_zero: ZeroMode::None,
            can_fast_zero: false,
            can_fua: FuaMode::None,
            ..self
        }
    }
}

/// One client connection; dropping it is nbdkit's `.close`.
///
/// Write the impl under `#[nbdbox_sdk::connection]` so that [`Connection::IMPLEMENTS`] and
/// the default [`Connection::capabilities`] match the methods it defines.
pub trait Connection: 'static {
    /// Which optional methods the type implements; written by `#[nbdbox_sdk::connection]`.
    const IMPLEMENTS: Implements = Implements::NONE;

    /// After open, before the first request.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    /// Before close, while the connection can still fail cleanly.
    fn finalize(&self) -> Result<()> {
        Ok(())
    }

    fn get_size(&self) -> Result<u64>;

    fn export_description(&self) -> Option<String> {
        None
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(None)
    }

    /// Every can_* answer. Default: nbdkit's, from the methods the type defines
    /// ([`Capabilities::implied`]); override to change some fields:
    /// `Ok(Capabilities { can_multi_conn: true, ..Capabilities::implied(Self::IMPLEMENTS) })`.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::implied(Self::IMPLEMENTS))
    }

    /// Fill `dst` (`count` bytes) with the disk's bytes from `offset`.
    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()>;

    fn pwrite(&self, _src: &WriteBuf, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(error(Errno::Erofs, "pwrite: the export is read-only"))
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Err(error(Errno::Einval, "flush is not supported"))
    }

    fn trim(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(error(Errno::Einval, "trim is not supported"))
    }

    /// ENOTSUP makes the host write zeroes instead (nbdkit's fallback).
    fn zero(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(errno(Errno::Enotsup))
    }

    fn extents(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<Vec<Extent>> {
        Err(error(Errno::Einval, "extents are not supported"))
    }

    /// A hint; as in nbdkit, native cache without a `.cache` callback does nothing.
    fn cache(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }
}

/// The exported `plugin` interface for plugin type `P`; `plugin!` names it for wit-bindgen.
#[doc(hidden)]
pub struct Adapter<P>(PhantomData<P>);

/// The exported `connection` resource: the plugin's connection value.
#[doc(hidden)]
pub struct ConnectionAdapter<P: Plugin>(P::Connection);

fn meta<P: Plugin>() -> Meta {
    Meta {
        name: P::NAME,
        description: P::DESCRIPTION,
        magic_config_key: P::MAGIC_CONFIG_KEY,
        config_keys: P::CONFIG_KEYS,
        thread_model: P::THREAD_MODEL,
        shared_state: P::SHARED_STATE,
    }
}

impl<P: Plugin + Version> Guest for Adapter<P> {
    type Connection = ConnectionAdapter<P>;

    fn describe() -> PluginInfo {
        meta::<P>().describe(P::VERSION)
    }

    fn config(key: String, value: String) -> Result<()> {
        let meta = meta::<P>();
        if meta.config_keys.is_empty() {
            // nbdkit's server/plugins.c, for a plugin without a .config callback.
            return Err(error(
                Errno::Einval,
                "this plugin does not need command line configuration",
            ));
        }
        if !meta.declares(&key) && !P::ACCEPTS_OTHER_KEYS {
            return Err(unknown_key(&key));
        }
        layer::with_mut(|plugin: &mut P| plugin.config(&key, &value))
    }

    fn config_complete() -> Result<()> {
        layer::with_mut(P::config_complete)
    }

    crate::__layer_calls!(P);
}

impl<P: Plugin> GuestConnection for ConnectionAdapter<P> {
    fn open(readonly: bool, export_name: String) -> Result<Handle> {
        let connection = layer::with(|plugin: &P| plugin.open(readonly, &export_name))?;
        Ok(Handle::new(ConnectionAdapter::<P>(connection)))
    }

    fn prepare(&self) -> Result<()> {
        self.0.prepare()
    }

    fn finalize(&self) -> Result<()> {
        self.0.finalize()
    }

    crate::__connection_calls!(0);
}

/// Register the plugin type, once, in the component crate:
/// `nbdbox_sdk::plugin!(MyPlugin);`. It exports the SDK's adapter for it and records the
/// crate's version (`CARGO_PKG_VERSION`) for `--dump-plugin`.
#[macro_export]
macro_rules! plugin {
    ($plugin:ty) => {
        $crate::__register!($plugin => $crate::Adapter<$plugin>, $crate::bindings::export_plugin);
    };
}

/// What `plugin!` and the filter SDK's `filter!` expand to: the version of the crate that
/// registers `$layer`, and wit-bindgen's export macro (`$export`) for its adapter, which takes
/// only an identifier.
#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    ($layer:ty => $adapter:ty, $($export:tt)+) => {
        impl $crate::layer::Version for $layer {
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        type __NbdboxLayer = $adapter;
        $($export)+!(__NbdboxLayer);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that writes and zeroes, and nothing else optional.
    struct WritesAndZeroes;

    #[crate::connection]
    impl Connection for WritesAndZeroes {
        fn get_size(&self) -> Result<u64> {
            Ok(0)
        }

        fn pread(&self, _: &ReadBuf, _: u32, _: u64, _: CmdFlags) -> Result<()> {
            Ok(())
        }

        fn pwrite(&self, _: &WriteBuf, _: u32, _: u64, _: CmdFlags) -> Result<()> {
            Ok(())
        }

        fn zero(&self, _: u64, _: u64, _: CmdFlags) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_attribute_records_the_optional_methods() {
        let expected = Implements {
            pwrite: true,
            zero: true,
            ..Implements::NONE
        };
        assert_eq!(WritesAndZeroes::IMPLEMENTS, expected);
    }

    #[test]
    fn implied_capabilities_are_nbdkits() {
        let none = Capabilities::implied(Implements::NONE);
        assert!(!none.can_write && !none.can_flush && !none.can_trim && !none.can_extents);
        assert!(none.can_zero == ZeroMode::Emulate && none.can_fast_zero);
        assert!(none.can_fua == FuaMode::None && none.can_cache == CacheMode::None);

        let some = Capabilities::implied(WritesAndZeroes::IMPLEMENTS);
        assert!(some.can_write && some.can_zero == ZeroMode::Native && !some.can_fast_zero);
        assert!(some.can_fua == FuaMode::None && !some.can_flush);

        let flush = Capabilities::implied(Implements {
            flush: true,
            cache: true,
            ..Implements::NONE
        });
        assert!(flush.can_flush && flush.can_fua == FuaMode::Emulate && flush.can_cache == CacheMode::Native);

        let read_only = some.read_only();
        assert!(!read_only.can_write && read_only.can_zero == ZeroMode::None && !read_only.can_fast_zero);
    }
}
