//! The `plugin` interface a filter imports as `next`: every call goes to the layer below
//! through [`Below`] / `BelowConnection` (the per-layer gate in `backend`), never straight to
//! another instance. Request buffers are lent down as they are, so data never passes through
//! a filter's memory; a failure below reaches the filter as an error, and only the instance
//! that trapped dies.

use super::buffers::{read_target, write_source};
use super::ImportError;
use crate::api::{self, LayerInfo};
use crate::runtime::below::{Below, BelowConnection};
use crate::runtime::bindings::filter_world::nbdbox::plugin::background;
use crate::runtime::bindings::filter_world::nbdbox::plugin::plugin::{Host, HostConnection};
use crate::runtime::bindings::{BlockSize, Capabilities, CmdFlags, Export, Extent, PluginInfo, ThreadModel};
use crate::runtime::resources::{NextConnection, ReadBuf, WriteBuf};
use crate::runtime::state::StoreData;
use std::sync::Arc;
use wasmtime::component::Resource;

type Answer<T> = Result<T, ImportError>;

impl StoreData {
    fn below(&self) -> wasmtime::Result<Arc<dyn Below>> {
        self.env
            .below
            .clone()
            .ok_or_else(|| wasmtime::format_err!("'{}' has no layer below it", self.env.name))
    }

    /// Borrowed: cloning the `Arc` per request per layer is measurable.
    fn connection(&self, c: &Resource<NextConnection>) -> wasmtime::Result<&Arc<dyn BelowConnection>> {
        Ok(&self.table.get(c)?.0)
    }

    /// The answer of the layer below, remembering an error's message: if the filter returns
    /// that same error, it is logged once, for the layer it came from.
    fn answer<T>(&mut self, result: Result<T, api::Error>) -> Answer<T> {
        result.map_err(|e| {
            self.last_below_message = e.message.clone();
            e.into()
        })
    }
}

fn plugin_info(info: &LayerInfo) -> PluginInfo {
    PluginInfo {
        name: info.name.clone(),
        version: info.version.clone(),
        description: info.description.clone(),
        magic_config_key: info.magic_config_key.clone(),
        config_keys: info
            .config_keys
            .iter()
            .map(|k| crate::runtime::bindings::nbdbox::plugin::types::ConfigKey {
                name: k.name.clone(),
                kind: k.kind.name().into(),
                help: k.help.clone(),
            })
            .collect(),
        thread_model: info.thread_model.into(),
        shared_state: info.shared_state,
    }
}

impl Host for StoreData {
    fn describe(&mut self) -> wasmtime::Result<PluginInfo> {
        Ok(plugin_info(self.below()?.info()))
    }

    fn config(&mut self, key: String, value: String) -> Answer<()> {
        if self.replaying {
            return Ok(());
        }
        let result = self.below()?.config(&key, &value);
        self.answer(result)
    }

    fn config_complete(&mut self) -> Answer<()> {
        if self.replaying {
            return Ok(());
        }
        let result = self.below()?.config_complete();
        self.answer(result)
    }

    fn get_thread_model(&mut self) -> wasmtime::Result<ThreadModel> {
        Ok(self.below()?.thread_model().into())
    }

    /// The host calls get-ready on every layer itself, the plugin first.
    fn get_ready(&mut self) -> Answer<()> {
        Ok(())
    }

    /// The host calls cleanup on every layer itself.
    fn cleanup(&mut self) -> wasmtime::Result<()> {
        Ok(())
    }

    fn preconnect(&mut self, readonly: bool) -> Answer<()> {
        let result = self.below()?.preconnect(readonly);
        self.answer(result)
    }

    fn list_exports(&mut self, readonly: bool) -> Answer<Vec<Export>> {
        let result = self.below()?.list_exports(readonly);
        Ok(self.answer(result)?.into_iter().map(Export::from).collect())
    }

    fn default_export(&mut self, readonly: bool) -> wasmtime::Result<Option<String>> {
        Ok(self.below()?.default_export(readonly))
    }
}

impl HostConnection for StoreData {
    fn open(&mut self, readonly: bool, export_name: String) -> Answer<Resource<NextConnection>> {
        let result = self.below()?.open(readonly, &export_name);
        let connection = self.answer(result)?;
        Ok(self.table.push(NextConnection(connection))?)
    }

    fn prepare(&mut self, c: Resource<NextConnection>) -> Answer<()> {
        let result = self.connection(&c)?.prepare();
        self.answer(result)
    }

    fn finalize(&mut self, c: Resource<NextConnection>) -> Answer<()> {
        let result = self.connection(&c)?.finalize();
        self.answer(result)
    }

    fn get_size(&mut self, c: Resource<NextConnection>) -> Answer<u64> {
        let result = self.connection(&c)?.get_size();
        self.answer(result)
    }

    fn export_description(&mut self, c: Resource<NextConnection>) -> wasmtime::Result<Option<String>> {
        Ok(self.connection(&c)?.export_description())
    }

    fn capabilities(&mut self, c: Resource<NextConnection>) -> Answer<Capabilities> {
        let result = self.connection(&c)?.capabilities();
        Ok(self.answer(result)?.into())
    }

    fn block_size(&mut self, c: Resource<NextConnection>) -> Answer<Option<BlockSize>> {
        let result = self.connection(&c)?.block_size();
        Ok(self.answer(result)?.map(BlockSize::from))
    }

    fn pread(
        &mut self,
        c: Resource<NextConnection>,
        dst: Resource<ReadBuf>,
        count: u32,
        offset: u64,
        flags: CmdFlags,
    ) -> Answer<()> {
        let raw = read_target(self, &dst)?;
        // SAFETY: a view of a buffer lent to this call or owned by this instance's table; the
        // layer below cannot reach this instance while it uses it.
        let buf = unsafe { raw.slice_mut(0, count as usize)? };
        let result = self.connection(&c)?.pread(buf, offset, flags.into());
        self.answer(result)
    }

    fn pwrite(
        &mut self,
        c: Resource<NextConnection>,
        src: Resource<WriteBuf>,
        count: u32,
        offset: u64,
        flags: CmdFlags,
    ) -> Answer<()> {
        let raw = write_source(self, &src)?;
        // SAFETY: as in `pread`.
        let buf = unsafe { raw.slice(0, count as usize)? };
        let result = self.connection(&c)?.pwrite(buf, offset, flags.into());
        self.answer(result)
    }

    fn flush(&mut self, c: Resource<NextConnection>, flags: CmdFlags) -> Answer<()> {
        let result = self.connection(&c)?.flush(flags.into());
        self.answer(result)
    }

    fn trim(&mut self, c: Resource<NextConnection>, count: u64, offset: u64, flags: CmdFlags) -> Answer<()> {
        let result = self.connection(&c)?.trim(count, offset, flags.into());
        self.answer(result)
    }

    fn zero(&mut self, c: Resource<NextConnection>, count: u64, offset: u64, flags: CmdFlags) -> Answer<()> {
        let result = self.connection(&c)?.zero(count, offset, flags.into());
        self.answer(result)
    }

    fn extents(
        &mut self,
        c: Resource<NextConnection>,
        count: u64,
        offset: u64,
        flags: CmdFlags,
    ) -> Answer<Vec<Extent>> {
        let result = self.connection(&c)?.extents(count, offset, flags.into());
        Ok(self.answer(result)?.into_iter().map(Extent::from).collect())
    }

    fn cache(&mut self, c: Resource<NextConnection>, count: u64, offset: u64, flags: CmdFlags) -> Answer<()> {
        let result = self.connection(&c)?.cache(count, offset, flags.into());
        self.answer(result)
    }

    /// The filter closed its connection below: the context closes when its last holder lets
    /// go of it.
    fn drop(&mut self, c: Resource<NextConnection>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

/// `background.cache`: queued for a host thread, so the filter's call returns at once.
impl background::Host for StoreData {
    fn cache(&mut self, below: Resource<NextConnection>, count: u64, offset: u64) -> wasmtime::Result<()> {
        let below = self.connection(&below)?.clone();
        let env = &self.env;
        crate::runtime::background::cache(&below, count, offset, &env.name, &env.log, &env.shutdown);
        Ok(())
    }
}
