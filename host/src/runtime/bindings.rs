//! The one `bindgen!` site: Rust types for the WIT package in `wit/`, and their conversions
//! to and from the host's own vocabulary ([`crate::api`]).
//!
//! Host-owned resources (request buffers, granted files, the next layer's connections) are
//! mapped onto the types of [`super::resources`]; every host import may trap (`trappable`),
//! which is how a guest that misuses a buffer fails its request instead of corrupting the host.

use crate::api;

wasmtime::component::bindgen!({
    world: "nbd-plugin",
    path: "../wit",
    imports: { default: trappable },
    trappable_error_type: { "nbdbox:plugin/types.error" => super::host::ImportError },
    with: {
        "nbdbox:plugin/buffers.read-buf": super::resources::ReadBuf,
        "nbdbox:plugin/buffers.write-buf": super::resources::WriteBuf,
        "nbdbox:plugin/grants.file": super::resources::GrantedFile,
        "nbdbox:plugin/grants.directory": super::resources::GrantedDirectory,
        "nbdbox:plugin/http.origin": super::resources::HttpOrigin,
        "nbdbox:plugin/streams.socket": super::resources::NetStream,
    },
});

pub use self::exports::nbdbox::plugin::plugin::{Guest as PluginExports, GuestIndices as PluginExportIndices};
pub use self::nbdbox::plugin::types::{
    BlockSize, CacheMode, Capabilities, CmdFlags, Errno, Error as GuestError, Export, Extent, ExtentFlags, FuaMode,
    PluginInfo, ThreadModel, ZeroMode,
};

/// The WIT package this host implements: `(minor, patch)` of `0.MINOR.PATCH`. Components built
/// for `0.MINOR.p` with `p <= PATCH` are served (wit/VERSIONING.md).
pub const WIT_VERSION: (u32, u32) = (2, 1);

/// `nbdbox:plugin@0.2.1`, for messages and `--dump-config`.
pub fn wit_package() -> String {
    format!("nbdbox:plugin@0.{}.{}", WIT_VERSION.0, WIT_VERSION.1)
}

/// The filter world: the same exports, plus the `plugin` interface imported as the next layer.
/// Shared interfaces map onto the plugin world's types, so one set of host impls serves both.
pub mod filter_world {
    wasmtime::component::bindgen!({
        world: "nbd-filter",
        path: "../wit",
        imports: { default: trappable },
        trappable_error_type: { "nbdbox:plugin/types.error" => super::super::host::ImportError },
        with: {
            "nbdbox:plugin/types": super::nbdbox::plugin::types,
            "nbdbox:plugin/host": super::nbdbox::plugin::host,
            "nbdbox:plugin/buffers": super::nbdbox::plugin::buffers,
            "nbdbox:plugin/grants": super::nbdbox::plugin::grants,
            "nbdbox:plugin/plugin.connection": super::super::resources::NextConnection,
        },
    });
}

impl From<ThreadModel> for api::ThreadModel {
    fn from(model: ThreadModel) -> api::ThreadModel {
        match model {
            ThreadModel::SerializeConnections => api::ThreadModel::SerializeConnections,
            ThreadModel::SerializeAllRequests => api::ThreadModel::SerializeAllRequests,
            ThreadModel::SerializeRequests => api::ThreadModel::SerializeRequests,
            ThreadModel::Parallel => api::ThreadModel::Parallel,
        }
    }
}

impl From<api::Errno> for Errno {
    fn from(errno: api::Errno) -> Errno {
        match errno {
            api::Errno::Perm => Errno::Eperm,
            api::Errno::Io => Errno::Eio,
            api::Errno::NoMem => Errno::Enomem,
            api::Errno::Inval => Errno::Einval,
            api::Errno::NoSpc => Errno::Enospc,
            api::Errno::FBig => Errno::Efbig,
            api::Errno::RoFs => Errno::Erofs,
            api::Errno::NotSup => Errno::Enotsup,
            api::Errno::Overflow => Errno::Eoverflow,
            api::Errno::Shutdown => Errno::Eshutdown,
            api::Errno::Acces => Errno::Eacces,
            api::Errno::NoEnt => Errno::Enoent,
        }
    }
}

impl From<Errno> for api::Errno {
    fn from(errno: Errno) -> api::Errno {
        match errno {
            Errno::Eperm => api::Errno::Perm,
            Errno::Eio => api::Errno::Io,
            Errno::Enomem => api::Errno::NoMem,
            Errno::Einval => api::Errno::Inval,
            Errno::Enospc => api::Errno::NoSpc,
            Errno::Efbig => api::Errno::FBig,
            Errno::Erofs => api::Errno::RoFs,
            Errno::Enotsup => api::Errno::NotSup,
            Errno::Eoverflow => api::Errno::Overflow,
            Errno::Eshutdown => api::Errno::Shutdown,
            Errno::Eacces => api::Errno::Acces,
            Errno::Enoent => api::Errno::NoEnt,
        }
    }
}

impl From<GuestError> for api::Error {
    fn from(e: GuestError) -> api::Error {
        api::Error {
            errno: e.errno.into(),
            message: e.message,
        }
    }
}

impl From<api::Error> for GuestError {
    fn from(e: api::Error) -> GuestError {
        GuestError {
            errno: e.errno.into(),
            message: e.message,
        }
    }
}

fn support_of(none: bool, emulate: bool) -> api::Support {
    if none {
        api::Support::None
    } else if emulate {
        api::Support::Emulate
    } else {
        api::Support::Native
    }
}

fn fua_of(support: api::Support) -> FuaMode {
    match support {
        api::Support::None => FuaMode::None,
        api::Support::Emulate => FuaMode::Emulate,
        api::Support::Native => FuaMode::Native,
    }
}

impl From<Capabilities> for api::Caps {
    fn from(c: Capabilities) -> api::Caps {
        api::Caps {
            can_write: c.can_write,
            can_flush: c.can_flush,
            is_rotational: c.is_rotational,
            can_trim: c.can_trim,
            can_zero: support_of(c.can_zero == ZeroMode::None, c.can_zero == ZeroMode::Emulate),
            can_fast_zero: c.can_fast_zero,
            can_extents: c.can_extents,
            can_fua: support_of(c.can_fua == FuaMode::None, c.can_fua == FuaMode::Emulate),
            can_multi_conn: c.can_multi_conn,
            can_cache: support_of(c.can_cache == CacheMode::None, c.can_cache == CacheMode::Emulate),
        }
    }
}

impl From<api::Caps> for Capabilities {
    fn from(c: api::Caps) -> Capabilities {
        let zero = match c.can_zero {
            api::Support::None => ZeroMode::None,
            api::Support::Emulate => ZeroMode::Emulate,
            api::Support::Native => ZeroMode::Native,
        };
        let cache = match c.can_cache {
            api::Support::None => CacheMode::None,
            api::Support::Emulate => CacheMode::Emulate,
            api::Support::Native => CacheMode::Native,
        };
        Capabilities {
            can_write: c.can_write,
            can_flush: c.can_flush,
            is_rotational: c.is_rotational,
            can_trim: c.can_trim,
            can_zero: zero,
            can_fast_zero: c.can_fast_zero,
            can_extents: c.can_extents,
            can_fua: fua_of(c.can_fua),
            can_multi_conn: c.can_multi_conn,
            can_cache: cache,
        }
    }
}

impl From<CmdFlags> for api::Flags {
    fn from(f: CmdFlags) -> api::Flags {
        api::Flags::NONE
            .with(api::Flags::FUA, f.contains(CmdFlags::FUA))
            .with(api::Flags::MAY_TRIM, f.contains(CmdFlags::MAY_TRIM))
            .with(api::Flags::REQ_ONE, f.contains(CmdFlags::REQ_ONE))
            .with(api::Flags::FAST_ZERO, f.contains(CmdFlags::FAST_ZERO))
    }
}

impl From<api::Flags> for CmdFlags {
    fn from(f: api::Flags) -> CmdFlags {
        let mut flags = CmdFlags::empty();
        for (api_flag, flag) in [
            (api::Flags::FUA, CmdFlags::FUA),
            (api::Flags::MAY_TRIM, CmdFlags::MAY_TRIM),
            (api::Flags::REQ_ONE, CmdFlags::REQ_ONE),
            (api::Flags::FAST_ZERO, CmdFlags::FAST_ZERO),
        ] {
            if f.contains(api_flag) {
                flags |= flag;
            }
        }
        flags
    }
}

impl From<Extent> for api::Extent {
    fn from(e: Extent) -> api::Extent {
        api::Extent {
            offset: e.offset,
            length: e.length,
            hole: e.flags.contains(ExtentFlags::HOLE),
            zero: e.flags.contains(ExtentFlags::ZERO),
        }
    }
}

impl From<api::Extent> for Extent {
    fn from(e: api::Extent) -> Extent {
        let mut flags = ExtentFlags::empty();
        if e.hole {
            flags |= ExtentFlags::HOLE;
        }
        if e.zero {
            flags |= ExtentFlags::ZERO;
        }
        Extent {
            offset: e.offset,
            length: e.length,
            flags,
        }
    }
}

impl From<BlockSize> for api::BlockSize {
    fn from(b: BlockSize) -> api::BlockSize {
        api::BlockSize {
            minimum: b.minimum,
            preferred: b.preferred,
            maximum: b.maximum,
        }
    }
}

impl From<api::BlockSize> for BlockSize {
    fn from(b: api::BlockSize) -> BlockSize {
        BlockSize {
            minimum: b.minimum,
            preferred: b.preferred,
            maximum: b.maximum,
        }
    }
}

impl From<Export> for api::ExportEntry {
    fn from(e: Export) -> api::ExportEntry {
        api::ExportEntry {
            name: e.name,
            description: e.description,
        }
    }
}

impl From<api::ExportEntry> for Export {
    fn from(e: api::ExportEntry) -> Export {
        Export {
            name: e.name,
            description: e.description,
        }
    }
}

impl From<api::ThreadModel> for ThreadModel {
    fn from(model: api::ThreadModel) -> ThreadModel {
        match model {
            api::ThreadModel::SerializeConnections => ThreadModel::SerializeConnections,
            api::ThreadModel::SerializeAllRequests => ThreadModel::SerializeAllRequests,
            api::ThreadModel::SerializeRequests => ThreadModel::SerializeRequests,
            api::ThreadModel::Parallel => ThreadModel::Parallel,
        }
    }
}
