//! What every component instance's `Store` holds: [`StoreData`], and the [`LayerEnv`] all
//! instances of one layer share.

use super::below::Below;
use super::clock::{CallClock, CutOff};
use super::grants::Grants;
use super::resources::RequestBuffers;
use super::wasi;
use crate::api::{ConfigKind, LayerInfo, ThreadModel};
use crate::log::Log;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
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

/// What every instance of one layer shares: its name, limits, grants, counters and the
/// layer below it.
pub struct LayerEnv {
    pub name: Arc<str>,
    pub limits: Limits,
    pub log: Log,
    pub shutdown: Shutdown,
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
    pub fn probe(source: &str, limits: Limits, log: Log, shutdown: Shutdown) -> LayerEnv {
        let info = LayerInfo {
            name: source.to_owned(),
            version: String::new(),
            description: String::new(),
            magic_config_key: None,
            config_keys: Vec::new(),
            thread_model: ThreadModel::SerializeAllRequests,
            shared_state: true,
        };
        LayerEnv::new(&info, limits, log, shutdown, Arc::default(), None)
    }

    pub fn new(
        info: &LayerInfo,
        limits: Limits,
        log: Log,
        shutdown: Shutdown,
        grants: Arc<Grants>,
        below: Option<Arc<dyn Below>>,
    ) -> LayerEnv {
        let grant_keys = info
            .config_keys
            .iter()
            .filter(|k| {
                matches!(
                    k.kind,
                    ConfigKind::File | ConfigKind::OutputFile | ConfigKind::Directory
                )
            })
            .map(|k| (k.name.clone(), k.kind))
            .collect();
        LayerEnv {
            name: Arc::from(info.name.as_str()),
            limits,
            log,
            shutdown,
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
    pub(crate) limits: StoreLimits,
    /// The buffers lent to the call in progress.
    pub(crate) buffers: RequestBuffers,
    pub(crate) clock: CallClock,
    /// Set by the deadline check when it cuts the call off.
    pub(crate) cut_off: Option<CutOff>,
    /// Bytes of host memory this instance holds in buffers of its own.
    pub(crate) host_bytes: u64,
    /// True while configuration is replayed into a new instance: the layer below was
    /// configured already, so `next.config` and friends do nothing.
    pub(crate) replaying: bool,
    /// The message of the last error the layer below returned to this instance, so that an
    /// error a filter merely passes on is logged once, by the layer it came from.
    pub(crate) last_below_message: Option<String>,
}

impl StoreData {
    pub fn new(env: Arc<LayerEnv>) -> StoreData {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(env.limits.memory).unwrap_or(usize::MAX))
            .instances(64)
            .tables(64)
            .memories(8)
            // A failed memory.grow returns -1 so the guest's fallible allocations can turn it
            // into ENOSPC; infallible ones still abort, which traps.
            .trap_on_grow_failure(false)
            .build();
        StoreData {
            wasi: wasi::context(env.name.clone(), env.log.clone()),
            env,
            table: ResourceTable::new(),
            limits,
            buffers: RequestBuffers::EMPTY,
            clock: CallClock::start(),
            cut_off: None,
            host_bytes: 0,
            replaying: false,
            last_below_message: None,
        }
    }

    /// Account for `bytes` more of host memory held for this instance: refused when it would
    /// take the instance past its memory limit (the limit covers linear memory and these).
    pub(crate) fn hold_host_bytes(&mut self, bytes: u64) -> wasmtime::Result<()> {
        let total = self.host_bytes.saturating_add(bytes);
        if total > self.env.limits.memory {
            wasmtime::bail!(
                "{} bytes of host buffers would exceed the instance's memory limit of {} bytes",
                total,
                self.env.limits.memory
            );
        }
        self.host_bytes = total;
        Ok(())
    }

    pub(crate) fn release_host_bytes(&mut self, bytes: u64) {
        self.host_bytes = self.host_bytes.saturating_sub(bytes);
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

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
