//! The component runtime: wasmtime engine, linker, built-in components, grants and limits.
//!
//! Each plugin instance runs in its own `Store` with a memory cap and a per-call deadline;
//! it sees WASI only as the plumbing Rust's std needs (no filesystem, no sockets), plus the
//! host interfaces of `wit/` and whatever files it was granted.

pub mod bindings;
pub mod buffers;
pub mod engine;
pub mod grants;
pub mod plugin;
pub mod store;

use std::path::Path;
use wasmtime::component::Linker;
use wasmtime::error::Context as _;
use wasmtime::Engine;
use wasmtime::{bail, Result};

pub use plugin::{CallError, Instance, InstanceSlot, Limits, PluginComponent};
pub use store::LayerCtx;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
}

/// Names of the built-in plugins, for help and error messages.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    builtin::BUILTINS.iter().map(|(name, _)| *name)
}

/// The engine and linker shared by every component of the process.
pub struct Runtime {
    pub engine: Engine,
    linker: Linker<LayerCtx>,
}

impl Runtime {
    pub fn new() -> Result<Runtime> {
        let engine = engine::new_engine()?;
        let linker = plugin::new_linker(&engine)?;
        Ok(Runtime { engine, linker })
    }

    /// Load a plugin by built-in name, or from a `.wasm` path (anything with a `/` or `.`,
    /// as nbdkit tells short names from paths).
    pub fn load_plugin(&self, spec: &str, limits: Limits) -> Result<PluginComponent> {
        let is_path = spec.contains('/') || spec.contains('.');
        let wasm: std::borrow::Cow<[u8]> = if is_path {
            std::fs::read(Path::new(spec))
                .with_context(|| format!("cannot open plugin '{spec}'"))?
                .into()
        } else if let Some((_, bytes)) = builtin::BUILTINS.iter().find(|(name, _)| *name == spec) {
            (*bytes).into()
        } else {
            let known: Vec<&str> = builtin_names().collect();
            bail!("unknown plugin '{spec}': built-in plugins are {}; a third-party plugin is given as a path to its .wasm file", known.join(", "));
        };
        PluginComponent::load(&self.engine, &self.linker, spec, &wasm, limits)
    }
}
