//! The component runtime: wasmtime's engine and linker, the built-in components, and the
//! instances that plugins and filters run in.
//!
//! Each instance runs in its own `Store` with a memory cap and a per-call deadline. It sees
//! WASI with nothing granted, the host interfaces of `wit/`, the files it was granted, and
//! (for a filter) the layer below through [`below`], which `backend` implements.
//!
//! The modules read in one direction:
//!
//! ```text
//!   below, resources, grants, clock, wasi   leaves: traits, resource reps, grant opening
//!   spliced                                 READ replies waiting in a pipe (zero copy)
//!   background                              host threads running filters' cache hints
//!     → state                               what a store holds (StoreData, LayerEnv)
//!     → instance                            the call discipline, typed calls
//!     → component                           loading, version policy, instantiation
//!     → host/                               the WIT interfaces' host side
//!     → engine, this file                   the process-wide engine and linker
//! ```

mod background;
pub mod below;
pub mod bindings;
pub mod budget;
mod clock;
mod component;
pub mod engine;
pub mod grants;
mod host;
mod instance;
pub mod network;
pub mod peer;
mod resources;
pub mod spliced;
mod state;
mod wasi;

pub use component::{LayerComponent, Role};
pub use instance::{CallError, Handle, Instance};
pub use state::{DebugFlags, LayerEnv, Limits, Process};

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime::error::Context as _;
use wasmtime::{bail, Engine, Result};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
}

pub use builtin::{FILTER_NAMES, PLUGIN_NAMES};

/// Names of the built-in components of a role, for help and error messages.
pub fn builtin_names(role: Role) -> &'static [&'static str] {
    match role {
        Role::Plugin => PLUGIN_NAMES,
        Role::Filter => FILTER_NAMES,
    }
}

fn builtin_wasm(role: Role, name: &str) -> Option<&'static [u8]> {
    let table = match role {
        Role::Plugin => builtin::PLUGINS,
        Role::Filter => builtin::FILTERS,
    };
    table.iter().find(|(n, _)| *n == name).map(|(_, wasm)| *wasm)
}

/// A sha256 digest as 64 lowercase hexadecimal digits.
pub fn sha256_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The engine and linker shared by every component of the process.
pub struct Runtime {
    pub engine: Engine,
    linker: Linker<state::StoreData>,
    process: Process,
}

impl Runtime {
    pub fn new(process: Process) -> Result<Runtime> {
        let engine = engine::new_engine()?;
        let linker = host::new_linker(&engine)?;
        Ok(Runtime {
            engine,
            linker,
            process,
        })
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Load a plugin or filter by built-in name, or from a `.wasm` path (anything with a `/`
    /// or `.`, as nbdkit tells short names from paths). With `sha256`, bytes whose digest
    /// differs are refused before they are compiled (a config file's pin).
    pub fn load(&self, spec: &str, role: Role, limits: Limits, sha256: Option<&[u8; 32]>) -> Result<LayerComponent> {
        let what = role.name();
        let wasm: Cow<[u8]> = if spec.contains('/') || spec.contains('.') {
            std::fs::read(Path::new(spec))
                .with_context(|| format!("cannot open {what} '{spec}'"))?
                .into()
        } else if let Some(bytes) = builtin_wasm(role, spec) {
            bytes.into()
        } else {
            let known = builtin_names(role).join(", ");
            bail!("unknown {what} '{spec}': built-in {what}s are {known}; a third-party {what} is given as a path to its .wasm file");
        };
        if let Some(expected) = sha256 {
            use sha2::Digest as _;
            let actual: [u8; 32] = sha2::Sha256::digest(&wasm).into();
            if actual != *expected {
                bail!(
                    "{what} '{spec}' has sha256 {}, but the configuration pins {}: refused",
                    sha256_hex(&actual),
                    sha256_hex(expected)
                );
            }
        }
        let component = engine::load_component(&self.engine, &wasm, &self.process.log)
            .with_context(|| format!("cannot load {what} '{spec}'"))?;
        let probe = LayerEnv::probe(spec, limits, &self.process);
        LayerComponent::load(&self.engine, &self.linker, component, spec, role, Arc::new(probe))
    }
}
