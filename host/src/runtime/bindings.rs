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

pub use exports::nbdbox::plugin::plugin::Guest as PluginExports;
pub use nbdbox::plugin::types::{
    BlockSize, CacheMode, Capabilities, CmdFlags, ConfigKind, Errno, Error as GuestError, Export,
    Extent, ExtentFlags, FuaMode, PluginInfo, ThreadModel, ZeroMode,
};

/// The WIT package version this host implements; components built for another are refused.
pub const WIT_PACKAGE: &str = "nbdbox:plugin@0.1.0";
