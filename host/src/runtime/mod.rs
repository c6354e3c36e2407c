//! The component runtime: wasmtime engine, linker, built-in components, grants and limits.
//!
//! Each plugin instance runs in its own `Store` with a memory cap and a per-call deadline;
//! it sees WASI only as the plumbing Rust's std needs (no filesystem, no sockets), plus the
//! host interfaces of `wit/` and whatever files it was granted.

pub mod bindings;
pub mod buffers;
pub mod component;
pub mod engine;
pub mod grants;
pub mod next;
pub mod stack;
pub mod store;

use std::path::Path;
use wasmtime::component::Linker;
use wasmtime::error::Context as _;
use wasmtime::Engine;
use wasmtime::{bail, Result};

pub use component::{CallError, Instance, LayerComponent, Limits, Role};
pub use stack::{InstanceSlot, Stack};
pub use store::LayerCtx;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
}

/// Names of the built-in components of a role, for help and error messages.
pub fn builtin_names(role: Role) -> Vec<&'static str> {
    builtins(role).iter().map(|(name, _)| *name).collect()
}

fn builtins(role: Role) -> &'static [(&'static str, &'static [u8])] {
    match role {
        Role::Plugin => builtin::PLUGINS,
        Role::Filter => builtin::FILTERS,
    }
}

/// The engine and linker shared by every component of the process.
pub struct Runtime {
    pub engine: Engine,
    linker: Linker<LayerCtx>,
}

impl Runtime {
    pub fn new() -> Result<Runtime> {
        let engine = engine::new_engine()?;
        let linker = component::new_linker(&engine)?;
        Ok(Runtime { engine, linker })
    }

    /// Load a plugin or filter by built-in name, or from a `.wasm` path (anything with a `/`
    /// or `.`, as nbdkit tells short names from paths).
    pub fn load(&self, spec: &str, role: Role, limits: Limits) -> Result<LayerComponent> {
        let what = if role == Role::Plugin { "plugin" } else { "filter" };
        let wasm: std::borrow::Cow<[u8]> = if spec.contains('/') || spec.contains('.') {
            std::fs::read(Path::new(spec))
                .with_context(|| format!("cannot open {what} '{spec}'"))?
                .into()
        } else if let Some((_, bytes)) = builtins(role).iter().find(|(name, _)| *name == spec) {
            (*bytes).into()
        } else {
            let known = builtin_names(role).join(", ");
            bail!("unknown {what} '{spec}': built-in {what}s are {known}; a third-party {what} is given as a path to its .wasm file");
        };
        LayerComponent::load(&self.engine, &self.linker, spec, &wasm, role, limits)
    }
}
