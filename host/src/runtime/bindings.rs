//! The one `bindgen!` site: Rust types for the WIT package in `wit/`.
//!
//! Host-owned resources (request buffers, granted files) are mapped onto the host's own types;
//! every host import may trap (`trappable`), which is how a guest that misuses a buffer fails
//! its request instead of corrupting the host.

wasmtime::component::bindgen!({
    world: "nbd-plugin",
    path: "../wit",
    imports: { default: trappable },
    with: {
        "nbdbox:plugin/buffers.read-buf": crate::runtime::buffers::ReadBuf,
        "nbdbox:plugin/buffers.write-buf": crate::runtime::buffers::WriteBuf,
        "nbdbox:plugin/grants.file": crate::runtime::grants::GrantedFile,
        "nbdbox:plugin/grants.directory": crate::runtime::grants::GrantedDirectory,
    },
});

pub use self::exports::nbdbox::plugin::plugin::Guest as PluginExports;
pub use self::nbdbox::plugin::types::{
    BlockSize, CacheMode, Capabilities, CmdFlags, ConfigKind, Errno, Error as GuestError, Export, Extent, ExtentFlags,
    FuaMode, PluginInfo, ThreadModel, ZeroMode,
};

/// The WIT package version this host implements; components built for another are refused.
pub const WIT_PACKAGE: &str = "nbdbox:plugin@0.1.0";

/// The filter world: the same exports, plus the `plugin` interface imported as the next layer.
/// Shared interfaces map onto the plugin world's types, so one set of host impls serves both.
pub mod filter_world {
    wasmtime::component::bindgen!({
        world: "nbd-filter",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "nbdbox:plugin/types": super::nbdbox::plugin::types,
            "nbdbox:plugin/host": super::nbdbox::plugin::host,
            "nbdbox:plugin/buffers": super::nbdbox::plugin::buffers,
            "nbdbox:plugin/grants": super::nbdbox::plugin::grants,
            "nbdbox:plugin/plugin.connection": crate::runtime::next::NextConnection,
        },
    });
}

/// The operations the host calls on any layer, plugin or filter.
pub use self::exports::nbdbox::plugin::plugin::GuestIndices as PluginExportIndices;
