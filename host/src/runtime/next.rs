//! How a filter reaches the layer below: the host implements the filter's imported `plugin`
//! interface by calling the next layer's exports, in the next layer's own store. Request
//! buffers are handed down as they are, so data never passes through a filter's memory.
//! A trap below traps the filter too, tagged with the layer it came from.

use super::bindings::filter_world::nbdbox::plugin::plugin::{Host, HostConnection};
use super::bindings::{BlockSize, Capabilities, CmdFlags, Export, Extent, GuestError, PluginExports, PluginInfo};
use super::buffers::{current, ReadBuf, RequestBuffers, WriteBuf};
use super::component::{CallError, Instance};
use super::store::LayerCtx;
use wasmtime::component::{Resource, ResourceAny};
use wasmtime::{format_err, Result, Store};

/// A connection of the layer below, as the filter above holds it.
pub struct NextConnection(ResourceAny);

type GuestResult<T> = Result<std::result::Result<T, GuestError>>;

impl LayerCtx {
    fn next_layer(&mut self) -> Result<&mut Instance> {
        self.next
            .as_deref_mut()
            .ok_or_else(|| format_err!("'{}' has no layer below it", self.name))
    }

    /// Call the layer below with this call's buffers; its trap becomes ours.
    fn forward<R>(
        &mut self,
        f: impl FnOnce(&PluginExports, &mut Store<LayerCtx>) -> Result<std::result::Result<R, GuestError>>,
    ) -> GuestResult<R> {
        self.forward_with(self.buffers, f)
    }

    /// Call the layer below with the given buffers.
    fn forward_with<R>(
        &mut self,
        buffers: RequestBuffers,
        f: impl FnOnce(&PluginExports, &mut Store<LayerCtx>) -> Result<std::result::Result<R, GuestError>>,
    ) -> GuestResult<R> {
        let next = self.next_layer()?;
        let result = next.call(|p, s| {
            s.data_mut().buffers = buffers;
            f(p, s)
        });
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(CallError::Guest(e)) => Ok(Err(e)),
            Err(CallError::Trap(t)) => Err(t),
        }
    }

    fn forward_on<R>(
        &mut self,
        conn: &Resource<NextConnection>,
        f: impl FnOnce(&PluginExports, &mut Store<LayerCtx>, ResourceAny) -> Result<std::result::Result<R, GuestError>>,
    ) -> GuestResult<R> {
        let handle = self.table.get(conn)?.0;
        self.forward(|p, s| f(p, s, handle))
    }
}

impl Host for LayerCtx {
    fn describe(&mut self) -> Result<PluginInfo> {
        Ok(self
            .forward(|p, s| p.call_describe(s).map(Ok))?
            .expect("describe cannot fail"))
    }
    fn config(&mut self, key: String, value: String) -> GuestResult<()> {
        self.forward(|p, s| p.call_config(s, &key, &value))
    }
    fn config_complete(&mut self) -> GuestResult<()> {
        self.forward(|p, s| p.call_config_complete(s))
    }
    fn get_ready(&mut self) -> GuestResult<()> {
        self.forward(|p, s| p.call_get_ready(s))
    }
    fn list_exports(&mut self, readonly: bool) -> GuestResult<Vec<Export>> {
        self.forward(|p, s| p.call_list_exports(s, readonly))
    }
}

impl HostConnection for LayerCtx {
    fn open(&mut self, readonly: bool, export_name: String) -> GuestResult<Resource<NextConnection>> {
        match self.forward(|p, s| p.connection().call_open(s, readonly, &export_name))? {
            Ok(handle) => Ok(Ok(self.table.push(NextConnection(handle))?)),
            Err(e) => Ok(Err(e)),
        }
    }
    fn prepare(&mut self, c: Resource<NextConnection>) -> GuestResult<()> {
        self.forward_on(&c, |p, s, h| p.connection().call_prepare(s, h))
    }
    fn finalize(&mut self, c: Resource<NextConnection>) -> GuestResult<()> {
        self.forward_on(&c, |p, s, h| p.connection().call_finalize(s, h))
    }
    fn get_size(&mut self, c: Resource<NextConnection>) -> GuestResult<u64> {
        self.forward_on(&c, |p, s, h| p.connection().call_get_size(s, h))
    }
    fn export_description(&mut self, c: Resource<NextConnection>) -> Result<Option<String>> {
        Ok(self
            .forward_on(&c, |p, s, h| p.connection().call_export_description(s, h).map(Ok))?
            .ok()
            .flatten())
    }
    fn capabilities(&mut self, c: Resource<NextConnection>) -> GuestResult<Capabilities> {
        self.forward_on(&c, |p, s, h| p.connection().call_capabilities(s, h))
    }
    fn block_size(&mut self, c: Resource<NextConnection>) -> GuestResult<Option<BlockSize>> {
        self.forward_on(&c, |p, s, h| p.connection().call_block_size(s, h))
    }
    fn pread(
        &mut self,
        c: Resource<NextConnection>,
        dst: Resource<ReadBuf>,
        count: u32,
        offset: u64,
        flags: CmdFlags,
    ) -> GuestResult<()> {
        // The destination may be this filter's own scratch buffer rather than the request's.
        let buffers = self.buffers_for(&dst)?;
        let handle = self.table.get(&c)?.0;
        self.forward_with(buffers, |p, s| {
            p.connection().call_pread(s, handle, current(), count, offset, flags)
        })
    }
    fn pwrite(
        &mut self,
        c: Resource<NextConnection>,
        _: Resource<WriteBuf>,
        count: u32,
        offset: u64,
        flags: CmdFlags,
    ) -> GuestResult<()> {
        self.forward_on(&c, |p, s, h| {
            p.connection().call_pwrite(s, h, current(), count, offset, flags)
        })
    }
    fn flush(&mut self, c: Resource<NextConnection>, flags: CmdFlags) -> GuestResult<()> {
        self.forward_on(&c, |p, s, h| p.connection().call_flush(s, h, flags))
    }
    fn trim(&mut self, c: Resource<NextConnection>, count: u32, offset: u64, flags: CmdFlags) -> GuestResult<()> {
        self.forward_on(&c, |p, s, h| p.connection().call_trim(s, h, count, offset, flags))
    }
    fn zero(&mut self, c: Resource<NextConnection>, count: u32, offset: u64, flags: CmdFlags) -> GuestResult<()> {
        self.forward_on(&c, |p, s, h| p.connection().call_zero(s, h, count, offset, flags))
    }
    fn extents(
        &mut self,
        c: Resource<NextConnection>,
        count: u32,
        offset: u64,
        flags: CmdFlags,
    ) -> GuestResult<Vec<Extent>> {
        self.forward_on(&c, |p, s, h| p.connection().call_extents(s, h, count, offset, flags))
    }
    fn cache(&mut self, c: Resource<NextConnection>, count: u32, offset: u64, flags: CmdFlags) -> GuestResult<()> {
        self.forward_on(&c, |p, s, h| p.connection().call_cache(s, h, count, offset, flags))
    }
    /// The filter closed its next connection: close it in the layer below.
    fn drop(&mut self, c: Resource<NextConnection>) -> Result<()> {
        let handle = self.table.delete(c)?.0;
        self.forward(|_, s| handle.resource_drop(s).map(Ok))?
            .map_err(|_| format_err!("closing the layer below failed"))
    }
}
