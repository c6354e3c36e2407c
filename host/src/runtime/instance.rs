//! One instance of a component in its own store, and the discipline of every call into it:
//! the buffers the call is lent, its deadline, and what a failure means.
//!
//! Deadlines: the store's epoch callback runs every [`CHECK_TICKS`] while wasm runs and cuts
//! the call off once it has *run* for the call timeout (see [`super::clock`]): time spent
//! blocked in host calls that are bounded by their own rules (`host.sleep`, network waits)
//! does not count, up to an allowance per outermost call (`Limits::blocked_allowance`).
//! After the server's shutdown grace every running call is cut off at its next check.

use super::bindings::{GuestError, PluginExports};
use super::clock::{self, CallClock, CutOff};
use super::resources::{CallBuffers, RequestBuffers, CURRENT};
use super::state::StoreData;
use crate::api::{self, BlockSize, Caps, ExportEntry, Extent, Flags, LayerInfo, ThreadModel};
use std::fmt;
use std::time::Duration;
use wasmtime::component::{Resource, ResourceAny};
use wasmtime::{Store, Trap};

/// How often (in epoch ticks) a running call's deadline is checked.
pub(crate) const CHECK_TICKS: u64 = 10;

/// One instance of a component in its own store.
pub struct Instance {
    store: Store<StoreData>,
    exports: PluginExports,
}

/// A connection of this instance (the component's `connection` resource: nbdkit's handle).
#[derive(Clone, Copy, Debug)]
pub struct Handle(ResourceAny);

/// How a call into a component can fail.
#[derive(Debug)]
pub enum CallError {
    /// The component returned an error value; the instance is fine. `passed_on` is true
    /// when it is the error the layer below gave this one, returned unchanged.
    Guest { error: api::Error, passed_on: bool },
    /// The component trapped, overran its deadline or its memory, or misused a host
    /// interface: the instance is dead.
    Trap(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Guest { error, .. } => write!(f, "{error}"),
            CallError::Trap(why) => write!(f, "{why}"),
        }
    }
}

type Call<R> = Result<R, CallError>;

/// Clears what a call set up, however the call ends (unwinding included): the buffers it was
/// lent are then unreachable from the store.
struct CallScope<'a> {
    store: &'a mut Store<StoreData>,
}

impl Drop for CallScope<'_> {
    fn drop(&mut self) {
        self.store.data_mut().buffers = RequestBuffers::EMPTY;
        clock::leave();
    }
}

impl Instance {
    pub(crate) fn new(store: Store<StoreData>, exports: PluginExports) -> Instance {
        Instance { store, exports }
    }

    /// Start a call's clock: used by instantiation too, whose start functions run guest code.
    pub(crate) fn start_clock(store: &mut Store<StoreData>) {
        store.data_mut().clock = CallClock::start();
        store.data_mut().cut_off = None;
        store.set_epoch_deadline(CHECK_TICKS);
    }

    /// Run one call, lending it `buffers` for its length.
    fn call<R>(
        &mut self,
        mut buffers: CallBuffers<'_>,
        f: impl FnOnce(&PluginExports, &mut Store<StoreData>) -> wasmtime::Result<Result<R, GuestError>>,
    ) -> Call<R> {
        clock::enter();
        let scope = CallScope { store: &mut self.store };
        let data = scope.store.data_mut();
        data.buffers = buffers.raw();
        data.last_below_message = None;
        Self::start_clock(scope.store);
        let result = f(&self.exports, scope.store);
        let data = scope.store.data_mut();
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let passed_on = e.message.is_some() && e.message == data.last_below_message;
                Err(CallError::Guest {
                    error: e.into(),
                    passed_on,
                })
            }
            Err(trap) => Err(CallError::Trap(describe_trap(&trap, data))),
        }
    }

    /// This instance's layer name.
    pub fn name(&self) -> &str {
        &self.store.data().env.name
    }

    /// Whether the memory budget has room for this instance to grow to its limit.
    pub fn admission(&self) -> Result<(), String> {
        let data = self.store.data();
        data.env.admission(data.held())
    }

    /// Configuration replayed into this instance: `next` calls of configuration do nothing.
    pub fn set_replaying(&mut self, replaying: bool) {
        self.store.data_mut().replaying = replaying;
    }

    pub fn describe(&mut self) -> Call<super::bindings::PluginInfo> {
        self.call(CallBuffers::None, |p, s| p.call_describe(s).map(Ok))
    }

    pub fn config(&mut self, key: &str, value: &str) -> Call<()> {
        self.call(CallBuffers::None, |p, s| p.call_config(s, key, value))
    }

    pub fn config_complete(&mut self) -> Call<()> {
        self.call(CallBuffers::None, |p, s| p.call_config_complete(s))
    }

    pub fn thread_model(&mut self) -> Call<ThreadModel> {
        self.call(CallBuffers::None, |p, s| p.call_get_thread_model(s).map(Ok))
            .map(ThreadModel::from)
    }

    pub fn get_ready(&mut self) -> Call<()> {
        self.call(CallBuffers::None, |p, s| p.call_get_ready(s))
    }

    pub fn cleanup(&mut self) -> Call<()> {
        self.call(CallBuffers::None, |p, s| p.call_cleanup(s).map(Ok))
    }

    pub fn preconnect(&mut self, readonly: bool) -> Call<()> {
        self.call(CallBuffers::None, |p, s| p.call_preconnect(s, readonly))
    }

    pub fn list_exports(&mut self, readonly: bool) -> Call<Vec<ExportEntry>> {
        let exports = self.call(CallBuffers::None, |p, s| p.call_list_exports(s, readonly))?;
        Ok(exports.into_iter().map(ExportEntry::from).collect())
    }

    pub fn default_export(&mut self, readonly: bool) -> Call<Option<String>> {
        self.call(CallBuffers::None, |p, s| p.call_default_export(s, readonly).map(Ok))
    }

    pub fn open(&mut self, readonly: bool, export_name: &str) -> Call<Handle> {
        self.call(CallBuffers::None, |p, s| {
            p.connection().call_open(s, readonly, export_name)
        })
        .map(Handle)
    }

    /// nbdkit's close: drop the connection resource.
    pub fn close(&mut self, handle: Handle) -> Call<()> {
        self.call(CallBuffers::None, |_, s| handle.0.resource_drop(s).map(Ok))
    }

    pub fn prepare(&mut self, h: Handle) -> Call<()> {
        self.call(CallBuffers::None, |p, s| p.connection().call_prepare(s, h.0))
    }

    pub fn finalize(&mut self, h: Handle) -> Call<()> {
        self.call(CallBuffers::None, |p, s| p.connection().call_finalize(s, h.0))
    }

    pub fn get_size(&mut self, h: Handle) -> Call<u64> {
        self.call(CallBuffers::None, |p, s| p.connection().call_get_size(s, h.0))
    }

    pub fn export_description(&mut self, h: Handle) -> Call<Option<String>> {
        self.call(CallBuffers::None, |p, s| {
            p.connection().call_export_description(s, h.0).map(Ok)
        })
    }

    /// The layer's own answers, before the host's rules (read-only, emulation).
    pub fn capabilities(&mut self, h: Handle) -> Call<Caps> {
        self.call(CallBuffers::None, |p, s| p.connection().call_capabilities(s, h.0))
            .map(Caps::from)
    }

    pub fn block_size(&mut self, h: Handle) -> Call<Option<BlockSize>> {
        self.call(CallBuffers::None, |p, s| p.connection().call_block_size(s, h.0))
            .map(|b| b.map(BlockSize::from))
    }

    pub fn pread(&mut self, h: Handle, buf: &mut [u8], offset: u64, flags: Flags) -> Call<()> {
        let count = buf.len() as u32;
        self.call(CallBuffers::Read(buf), |p, s| {
            p.connection()
                .call_pread(s, h.0, Resource::new_borrow(CURRENT), count, offset, flags.into())
        })
    }

    pub fn pwrite(&mut self, h: Handle, buf: &[u8], offset: u64, flags: Flags) -> Call<()> {
        let count = buf.len() as u32;
        self.call(CallBuffers::Write(buf), |p, s| {
            p.connection()
                .call_pwrite(s, h.0, Resource::new_borrow(CURRENT), count, offset, flags.into())
        })
    }

    pub fn flush(&mut self, h: Handle, flags: Flags) -> Call<()> {
        self.call(CallBuffers::None, |p, s| {
            p.connection().call_flush(s, h.0, flags.into())
        })
    }

    pub fn trim(&mut self, h: Handle, count: u64, offset: u64, flags: Flags) -> Call<()> {
        self.call(CallBuffers::None, |p, s| {
            p.connection().call_trim(s, h.0, count, offset, flags.into())
        })
    }

    pub fn zero(&mut self, h: Handle, count: u64, offset: u64, flags: Flags) -> Call<()> {
        self.call(CallBuffers::None, |p, s| {
            p.connection().call_zero(s, h.0, count, offset, flags.into())
        })
    }

    pub fn extents(&mut self, h: Handle, count: u64, offset: u64, flags: Flags) -> Call<Vec<Extent>> {
        let extents = self.call(CallBuffers::None, |p, s| {
            p.connection().call_extents(s, h.0, count, offset, flags.into())
        })?;
        Ok(extents.into_iter().map(Extent::from).collect())
    }

    pub fn cache(&mut self, h: Handle, count: u64, offset: u64, flags: Flags) -> Call<()> {
        self.call(CallBuffers::None, |p, s| {
            p.connection().call_cache(s, h.0, count, offset, flags.into())
        })
    }
}

/// One line on what killed the instance.
fn describe_trap(trap: &wasmtime::Error, data: &StoreData) -> String {
    match (trap.downcast_ref::<Trap>(), data.cut_off) {
        (Some(Trap::Interrupt), Some(CutOff::Shutdown)) => "the call was cut off by the server's shutdown".into(),
        (Some(Trap::Interrupt), _) => format!(
            "the call exceeded its deadline of {}",
            seconds(data.env.limits.call_timeout)
        ),
        _ => format!("trapped: {}", trap.root_cause()),
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Describe, for a freshly loaded component.
pub(crate) fn info_of(info: super::bindings::PluginInfo) -> Result<LayerInfo, String> {
    let config_keys = info
        .config_keys
        .into_iter()
        .map(|k| match api::ConfigKind::parse(&k.kind) {
            Some(kind) => Ok(api::ConfigKey {
                name: k.name,
                kind,
                help: k.help,
            }),
            None => Err(format!(
                "config key '{}' has kind '{}', which this nbdbox does not know",
                k.name, k.kind
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(LayerInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        magic_config_key: info.magic_config_key,
        config_keys,
        thread_model: info.thread_model.into(),
        shared_state: info.shared_state,
    })
}
