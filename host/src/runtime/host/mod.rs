//! The host side of the WIT interfaces, one file per interface: `host`, `buffers`, `grants`,
//! and `next` (the `plugin` interface a filter imports, with `background`). Each implements
//! the generated traits on [`StoreData`].

mod buffers;
mod grants;
mod network;
mod next;
mod services;

use super::bindings::{filter_world, nbdbox, GuestError};
use super::state::StoreData;
use crate::api;
use wasmtime::component::{HasSelf, Linker, ResourceTableError};
use wasmtime::Engine;

/// How a host import fails: an error the component receives (its call goes on), or a trap
/// (the component misused the interface; its instance dies).
pub enum ImportError {
    Guest(GuestError),
    Trap(wasmtime::Error),
}

impl From<wasmtime::Error> for ImportError {
    fn from(e: wasmtime::Error) -> ImportError {
        ImportError::Trap(e)
    }
}

impl From<ResourceTableError> for ImportError {
    fn from(e: ResourceTableError) -> ImportError {
        ImportError::Trap(e.into())
    }
}

impl From<api::Error> for ImportError {
    fn from(e: api::Error) -> ImportError {
        ImportError::Guest(e.into())
    }
}

impl nbdbox::plugin::types::Host for StoreData {
    fn convert_error(&mut self, err: ImportError) -> wasmtime::Result<GuestError> {
        match err {
            ImportError::Guest(e) => Ok(e),
            ImportError::Trap(t) => Err(t),
        }
    }
}

/// The linker every instance is made from: all of WASI (nothing granted, see `wasi`), the
/// host interfaces, and the `plugin` import through which a filter reaches the layer below
/// (plugins do not import it).
pub(crate) fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    use nbdbox::plugin::{buffers, grants, host, http, streams, types};
    let mut linker = Linker::new(engine);
    super::wasi::add_to_linker(&mut linker)?;
    types::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    host::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    buffers::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    self::buffers::link_copy_free(&mut linker)?;
    grants::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    http::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    streams::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    filter_world::nbdbox::plugin::plugin::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    filter_world::nbdbox::plugin::background::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)?;
    Ok(linker)
}
