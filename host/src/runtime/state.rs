//! What every component instance's `Store` holds: [`StoreData`], and the [`LayerEnv`] all
//! instances of one layer share.

use super::below::Below;
use super::budget::MemoryBudget;
use super::clock::{CallClock, CutOff};
use super::grants::Grants;
use super::resources::RequestBuffers;
use super::wasi;
use crate::api::{ConfigKind, LayerInfo, ThreadModel};
use crate::log::Log;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Limits applied to every instance of a component.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes; host-side buffers the instance holds count too.
    pub memory: u64,
    /// How long one call may run (time blocked in host calls such as `host.sleep` aside).
    pub call_timeout: Duration,
}

impl Limits {
    /// How long one call may spend blocked in host calls that do not count against its
    /// deadline: ten times the deadline (retry's default backoff sleeps 62 s in one call).
    pub fn blocked_allowance(&self) -> Duration {
        self.call_timeout.saturating_mul(10)
    }
}

/// What every layer shares with the rest of the process.
#[derive(Clone)]
pub struct Process {
    pub log: Log,
    pub shutdown: Shutdown,
    pub budget: Arc<MemoryBudget>,
    pub debug_flags: Arc<DebugFlags>,
}

/// `-D NAME.FLAG=N` flags addressed to components (nbdkit's plugin and filter debug flags),
/// each marked once a layer named NAME has read it, so that the ones nobody reads can be
/// warned about.
#[derive(Default)]
pub struct DebugFlags(Vec<DebugFlag>);

struct DebugFlag {
    layer: String,
    flag: String,
    value: i32,
    read: AtomicBool,
}

impl DebugFlags {
    pub fn new(flags: impl IntoIterator<Item = (String, String, i32)>) -> DebugFlags {
        DebugFlags(
            flags
                .into_iter()
                .map(|(layer, flag, value)| DebugFlag {
                    layer,
                    flag,
                    value,
                    read: AtomicBool::new(false),
                })
                .collect(),
        )
    }

    /// The value given for `layer.flag` (the last one, as nbdkit keeps), marked as read.
    pub(crate) fn read(&self, layer: &str, flag: &str) -> Option<i32> {
        let found = self.0.iter().rev().find(|f| f.layer == layer && f.flag == flag)?;
        found.read.store(true, Ordering::Relaxed);
        Some(found.value)
    }

    /// Whether a layer has read `layer.flag`.
    pub fn was_read(&self, layer: &str, flag: &str) -> bool {
        self.0
            .iter()
            .any(|f| f.layer == layer && f.flag == flag && f.read.load(Ordering::Relaxed))
    }
}

/// What every instance of one layer shares: its name, limits, grants, counters and the
/// layer below it.
pub struct LayerEnv {
    pub name: Arc<str>,
    pub limits: Limits,
    pub log: Log,
    pub shutdown: Shutdown,
    budget: Arc<MemoryBudget>,
    pub(crate) debug_flags: Arc<DebugFlags>,
    grants: Arc<Grants>,
    /// The grant keys this layer declared, and of which kind: it may open those only.
    grant_keys: HashMap<String, ConfigKind>,
    counters: Mutex<HashMap<String, i64>>,
    /// The layer below, for a filter.
    pub below: Option<Arc<dyn Below>>,
}

impl LayerEnv {
    /// The environment of the instance that describes a component as it is loaded: no
    /// grants, no layer below.
    pub fn probe(source: &str, limits: Limits, process: &Process) -> LayerEnv {
        let info = LayerInfo {
            name: source.to_owned(),
            version: String::new(),
            description: String::new(),
            magic_config_key: None,
            config_keys: Vec::new(),
            thread_model: ThreadModel::SerializeAllRequests,
            shared_state: true,
        };
        LayerEnv::new(&info, limits, process, Arc::default(), None)
    }

    pub fn new(
        info: &LayerInfo,
        limits: Limits,
        process: &Process,
        grants: Arc<Grants>,
        below: Option<Arc<dyn Below>>,
    ) -> LayerEnv {
        let grant_keys = info
            .config_keys
            .iter()
            .filter(|k| k.kind.is_grant())
            .map(|k| (k.name.clone(), k.kind))
            .collect();
        LayerEnv {
            name: Arc::from(info.name.as_str()),
            limits,
            log: process.log.clone(),
            shutdown: process.shutdown.clone(),
            budget: process.budget.clone(),
            debug_flags: process.debug_flags.clone(),
            grants,
            grant_keys,
            counters: Mutex::default(),
            below,
        }
    }

    /// The grant for `key`, if this layer declared `key` with one of these kinds.
    pub(crate) fn grant(&self, key: &str, kinds: &[ConfigKind]) -> Option<&super::grants::Grant> {
        let declared = self.grant_keys.get(key).is_some_and(|k| kinds.contains(k));
        declared.then(|| self.grants.get(key)).flatten()
    }

    /// Why an instance of this layer that holds `held` bytes (0 for a new one) may not serve
    /// a connection now, if it may not: the process's budget has no room for it to grow to
    /// this layer's limit.
    pub(crate) fn admission(&self, held: u64) -> Result<(), String> {
        if self.budget.has_room_for(self.limits.memory, held) {
            return Ok(());
        }
        Err(format!(
            "the server's memory budget is spent: instances hold {} of {} bytes (--memory-budget), \
             and a new one may need {} (--memory-limit)",
            self.budget.used(),
            self.budget.total(),
            self.limits.memory
        ))
    }

    pub(crate) fn counter_add(&self, name: &str, delta: i64) -> i64 {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let value = counters.entry(name.to_owned()).or_default();
        *value = value.saturating_add(delta);
        *value
    }
}

/// Per-instance state.
pub struct StoreData {
    pub(crate) env: Arc<LayerEnv>,
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// The buffers lent to the call in progress.
    pub(crate) buffers: RequestBuffers,
    pub(crate) clock: CallClock,
    /// Set by the deadline check when it cuts the call off.
    pub(crate) cut_off: Option<CutOff>,
    /// Bytes this instance holds: linear memories, tables, and host buffers of its own. All
    /// count against its limit and against the process's budget.
    held: u64,
    /// True while configuration is replayed into a new instance: the layer below was
    /// configured already, so `next.config` and friends do nothing.
    pub(crate) replaying: bool,
    /// The message of the last error the layer below returned to this instance, so that an
    /// error a filter merely passes on is logged once, by the layer it came from.
    pub(crate) last_below_message: Option<String>,
}

/// What one table element is counted as: wasmtime keeps a pointer or two per element.
const TABLE_ELEMENT_BYTES: u64 = 16;

impl StoreData {
    pub fn new(env: Arc<LayerEnv>) -> StoreData {
        StoreData {
            wasi: wasi::context(env.name.clone(), env.log.clone()),
            env,
            table: ResourceTable::new(),
            buffers: RequestBuffers::EMPTY,
            clock: CallClock::start(),
            cut_off: None,
            held: 0,
            replaying: false,
            last_below_message: None,
        }
    }

    /// Bytes this instance holds.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Hold `bytes` more for this instance if they fit both its limit and the process's
    /// budget.
    fn hold(&mut self, bytes: u64) -> Result<(), String> {
        let total = self.held.saturating_add(bytes);
        if total > self.env.limits.memory {
            return Err(format!(
                "{total} bytes would exceed the instance's memory limit of {} bytes (--memory-limit)",
                self.env.limits.memory
            ));
        }
        if !self.env.budget.take(bytes) {
            return Err(format!(
                "{bytes} more bytes would exceed the server's memory budget of {} bytes (--memory-budget)",
                self.env.budget.total()
            ));
        }
        self.held = total;
        Ok(())
    }

    /// Account for a host buffer of `bytes` kept for this instance; a trap if it does not fit.
    pub(crate) fn hold_host_bytes(&mut self, bytes: u64) -> wasmtime::Result<()> {
        self.hold(bytes)
            .map_err(|why| wasmtime::format_err!("a host buffer: {why}"))
    }

    pub(crate) fn release_host_bytes(&mut self, bytes: u64) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.env.budget.give_back(bytes);
    }

    /// Whether the call in progress must be cut off now, and why.
    pub(crate) fn deadline_passed(&self) -> Option<CutOff> {
        if self.env.shutdown.aborted() {
            Some(CutOff::Shutdown)
        } else if self.clock.ran() >= self.env.limits.call_timeout {
            Some(CutOff::Deadline)
        } else {
            None
        }
    }
}

impl Drop for StoreData {
    fn drop(&mut self) {
        self.env.budget.give_back(self.held);
    }
}

/// Growth of linear memory and tables, held like host buffers. A refused growth fails the
/// guest's `memory.grow` (-1), so its fallible allocations can report ENOMEM; infallible ones
/// abort, which traps.
impl ResourceLimiter for StoreData {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        Ok(self.hold(desired.saturating_sub(current) as u64).is_ok())
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let elements = desired.saturating_sub(current) as u64;
        Ok(self.hold(elements.saturating_mul(TABLE_ELEMENT_BYTES)).is_ok())
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
