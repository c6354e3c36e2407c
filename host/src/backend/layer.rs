//! One layer of an export (nbdkit's `struct backend`): a component, where its instances live,
//! and the configuration it received, which every new instance of it is given again.
//!
//! Placement is per layer. A layer with shared state (it keeps the disk in its own memory)
//! has one instance that every connection reaches; its calls take turns. Any other layer is
//! pooled: a connection's context borrows instances from the pool (one per concurrent
//! request, see `Context`) and returns them when it closes, so a shared layer above never
//! serializes the layers below it, and a slow call in one instance holds up nobody else.

use super::context::Context;
use super::rules;
use crate::api::{Errno, Error, ExportEntry, LayerInfo, ThreadModel};
use crate::log::{self, Log};
use crate::runtime::below::{Below, BelowConnection};
use crate::runtime::{CallError, Instance, LayerComponent, LayerEnv, Role};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Idle instances a pooled layer keeps for later connections.
const MAX_IDLE: usize = 4;

pub struct Layer {
    pub component: Arc<LayerComponent>,
    env: Arc<LayerEnv>,
    pub(super) below: Option<Arc<Layer>>,
    /// This layer, for contexts opened through `Below::open`.
    me: Weak<Layer>,
    placement: Placement,
    record: Mutex<Record>,
    /// Set once configuration is over: configuration calls are refused from then on.
    serving: AtomicBool,
    /// The model the layer asked for after configuration (`get-thread-model`).
    thread_model: OnceLock<ThreadModel>,
    /// How many instances one context may use at once (1 unless the export is parallel).
    max_lanes: AtomicUsize,
}

enum Placement {
    /// One instance for every connection; None once it trapped and its state is lost.
    Shared(Mutex<Option<Box<Instance>>>),
    /// Any instance serves any connection: idle ones wait here.
    Pooled(Mutex<Vec<Instance>>),
}

/// What the layer was configured with, in order, to replay into new instances.
#[derive(Clone, Default)]
struct Record {
    config: Vec<(String, String)>,
    completed: bool,
    ready: bool,
}

/// What an instance is taken from the pool for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// A connection's context keeps it.
    Keep,
    /// One call, after which it goes back.
    Call,
}

/// Whether a failed call's message is logged here (the data path) or returned for the caller
/// to report (configuration, where the lifecycle reports the startup failure once).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Report {
    Log,
    Return,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-done that a later call relies on.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Layer {
    /// The layer, with a first instance (which the configuration goes to).
    pub fn new(
        component: Arc<LayerComponent>,
        env: Arc<LayerEnv>,
        below: Option<Arc<Layer>>,
    ) -> Result<Arc<Layer>, Error> {
        let first = component
            .instantiate(env.clone())
            .map_err(|e| Error::new(Errno::Io, format!("{e:#}")))?;
        let placement = if component.info.shared_state {
            Placement::Shared(Mutex::new(Some(Box::new(first))))
        } else {
            Placement::Pooled(Mutex::new(vec![first]))
        };
        Ok(Arc::new_cyclic(|me| Layer {
            component,
            env,
            below,
            me: me.clone(),
            placement,
            record: Mutex::default(),
            serving: AtomicBool::new(false),
            thread_model: OnceLock::new(),
            max_lanes: AtomicUsize::new(1),
        }))
    }

    pub fn name(&self) -> &str {
        &self.env.name
    }

    pub fn info(&self) -> &LayerInfo {
        &self.component.info
    }

    pub(super) fn log(&self) -> &Log {
        &self.env.log
    }

    pub fn is_plugin(&self) -> bool {
        self.component.role == Role::Plugin
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.placement, Placement::Shared(_))
    }

    pub(super) fn max_lanes(&self) -> usize {
        self.max_lanes.load(Ordering::Relaxed)
    }

    /// Configuration is over; a context may use up to `lanes` instances at once.
    pub(super) fn start_serving(&self, lanes: usize) {
        let lanes = if self.is_shared() { 1 } else { lanes.max(1) };
        self.max_lanes.store(lanes, Ordering::Relaxed);
        self.serving.store(true, Ordering::SeqCst);
    }

    /// The most restrictive model of this layer and every layer below it.
    pub fn stack_thread_model(&self) -> ThreadModel {
        let own = self.thread_model.get().copied().unwrap_or(self.info().thread_model);
        match &self.below {
            Some(below) => own.min(below.stack_thread_model()),
            None => own,
        }
    }

    /// A call's result, its failure logged (or returned) as `report` says.
    pub(super) fn outcome<R>(&self, what: &str, report: Report, result: Result<R, CallError>) -> Result<R, Error> {
        result.map_err(|e| self.failure(what, report, e))
    }

    /// What a failed call means for the caller: the layer's error, or EIO for a trap.
    pub(super) fn failure(&self, what: &str, report: Report, e: CallError) -> Error {
        match e {
            CallError::Guest { error, passed_on } => {
                if report == Report::Log && !passed_on {
                    if let Some(message) = &error.message {
                        log::error!(self.env.log, "{}: {}", self.name(), log::sanitize(message));
                    }
                }
                error
            }
            CallError::Trap(why) => {
                let consequence = if self.is_shared() {
                    "; the layer's shared state is lost with its instance, so every request to this export now fails"
                } else {
                    "; the instance is replaced"
                };
                let message = format!("{}: {what}: {why}", self.name());
                match report {
                    Report::Log => {
                        log::error!(self.env.log, "{message}{consequence}");
                        Error::bare(Errno::Io)
                    }
                    Report::Return => Error::new(Errno::Io, message),
                }
            }
        }
    }

    /// Run `f` on the shared instance; a trap loses it, and with it the layer's state.
    pub(super) fn on_shared<R>(&self, f: impl FnOnce(&mut Instance) -> Result<R, CallError>) -> Result<R, CallError> {
        let Placement::Shared(slot) = &self.placement else {
            unreachable!("only a shared layer has a shared instance");
        };
        let mut slot = lock(slot);
        let Some(instance) = slot.as_mut() else {
            return Err(CallError::Trap(
                "the instance died earlier and its state is lost".into(),
            ));
        };
        let result = f(instance);
        if matches!(result, Err(CallError::Trap(_))) {
            *slot = None;
        }
        result
    }

    /// An instance to use: an idle one, or a new one. A new one for a connection to keep
    /// must have room in the memory budget for its whole limit (`Use::Keep`); one for a
    /// single call that concerns no connection (preconnect, a listing) goes back to the pool
    /// at once and is held only to what it grows to, so that such calls do not refuse a
    /// client before GO can tell it why.
    pub(super) fn take_instance(&self, use_: Use) -> Result<Instance, Error> {
        let Placement::Pooled(idle) = &self.placement else {
            unreachable!("only pooled layers lend instances out");
        };
        let idle = lock(idle).pop();
        if use_ == Use::Keep {
            let admission = match &idle {
                Some(instance) => instance.admission(),
                None => self.env.admission(0),
            };
            admission.map_err(|why| Error::new(Errno::NoMem, format!("{}: {why}", self.name())))?;
        }
        match idle {
            Some(instance) => Ok(instance),
            None => self.new_instance(),
        }
    }

    /// A healthy instance back into the pool, unless the pool is full or the memory budget
    /// could not let it serve a connection (then its memory goes back to the budget).
    pub(super) fn give_back(&self, instance: Instance) {
        if let Placement::Pooled(idle) = &self.placement {
            let mut idle = lock(idle);
            if idle.len() < MAX_IDLE && instance.admission().is_ok() {
                idle.push(instance);
            }
        }
    }

    /// A new instance, configured as the first one was. A filter's `next` configuration calls
    /// do nothing meanwhile: the layer below was configured already.
    fn new_instance(&self) -> Result<Instance, Error> {
        let record = lock(&self.record).clone();
        let mut instance = self
            .component
            .instantiate(self.env.clone())
            .map_err(|e| Error::new(Errno::Io, format!("{}: {e:#}", self.name())))?;
        instance.set_replaying(true);
        let mut replay = || -> Result<(), CallError> {
            for (key, value) in &record.config {
                instance.config(key, value)?;
            }
            if record.completed {
                instance.config_complete()?;
            }
            if record.ready {
                instance.get_ready()?;
            }
            Ok(())
        };
        let replayed = replay();
        instance.set_replaying(false);
        match replayed {
            Ok(()) => Ok(instance),
            Err(e) => {
                let why = format!("{}: configuring a new instance: {e}", self.name());
                log::error!(self.env.log, "{why}");
                Err(Error::new(Errno::Io, why))
            }
        }
    }

    /// Run a call that concerns no connection on some instance of this layer.
    pub(super) fn call<R>(
        &self,
        what: &str,
        report: Report,
        f: impl FnOnce(&mut Instance) -> Result<R, CallError>,
    ) -> Result<R, Error> {
        let result = if self.is_shared() {
            self.on_shared(f)
        } else {
            let mut instance = self.take_instance(Use::Call)?;
            let result = f(&mut instance);
            if !matches!(result, Err(CallError::Trap(_))) {
                self.give_back(instance);
            }
            result
        };
        self.outcome(what, report, result)
    }

    fn configuring(&self, what: &str) -> Result<(), Error> {
        if self.serving.load(Ordering::SeqCst) {
            let why = format!(
                "{}: {what}: the configuration cannot change while the server is serving",
                self.name()
            );
            log::debug!(self.env.log, "refused: {why}");
            return Err(Error::new(Errno::Inval, why));
        }
        Ok(())
    }

    /// nbdkit's .config, recorded for new instances.
    pub fn config(&self, key: &str, value: &str) -> Result<(), Error> {
        self.configuring(key)?;
        self.call("config", Report::Return, |i| i.config(key, value))?;
        lock(&self.record).config.push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    pub fn config_complete(&self) -> Result<(), Error> {
        self.configuring("config-complete")?;
        self.call("config-complete", Report::Return, |i| i.config_complete())?;
        lock(&self.record).completed = true;
        Ok(())
    }

    /// Ask the layer for its model after configuration (it may only lower it).
    pub(super) fn settle_thread_model(&self) -> Result<(), Error> {
        let asked = self.call("get-thread-model", Report::Return, |i| i.thread_model())?;
        let _ = self.thread_model.set(asked.min(self.info().thread_model));
        Ok(())
    }

    pub(super) fn get_ready(&self) -> Result<(), Error> {
        self.call("get-ready", Report::Return, |i| i.get_ready())?;
        lock(&self.record).ready = true;
        Ok(())
    }

    pub(super) fn cleanup(&self) {
        let _ = self.call("cleanup", Report::Log, |i| i.cleanup());
    }

    pub fn preconnect(&self, readonly: bool) -> Result<(), Error> {
        self.call("preconnect", Report::Log, |i| i.preconnect(readonly))
    }

    /// nbdkit's .list_exports, held to what the wire can carry.
    pub fn list_exports(&self, readonly: bool) -> Result<Vec<ExportEntry>, Error> {
        let listed = self.call("list-exports", Report::Log, |i| i.list_exports(readonly))?;
        let (exports, note) = rules::bounded_exports(listed);
        if let Some(note) = note {
            log::warning!(self.env.log, "{}: {note}", self.name());
        }
        Ok(exports)
    }

    /// nbdkit's .default_export; a name that cannot be sent counts as none.
    pub fn default_export(&self, readonly: bool) -> Option<String> {
        let name = self
            .call("default-export", Report::Log, |i| i.default_export(readonly))
            .ok()
            .flatten()?;
        match rules::export_name_fault(&name) {
            None => Some(name),
            Some(fault) => {
                log::warning!(self.env.log, "{}: default export name ignored: {fault}", self.name());
                None
            }
        }
    }

    /// nbdkit's open: a new context of this layer.
    pub fn open(&self, readonly: bool, export_name: &str) -> Result<Arc<Context>, Error> {
        let me = self.me.upgrade().expect("a layer lives while it is called");
        Context::open(me, readonly, export_name)
    }
}

impl Below for Layer {
    fn info(&self) -> &LayerInfo {
        Layer::info(self)
    }
    fn config(&self, key: &str, value: &str) -> Result<(), Error> {
        Layer::config(self, key, value)
    }
    fn config_complete(&self) -> Result<(), Error> {
        Layer::config_complete(self)
    }
    fn thread_model(&self) -> ThreadModel {
        self.stack_thread_model()
    }
    fn preconnect(&self, readonly: bool) -> Result<(), Error> {
        Layer::preconnect(self, readonly)
    }
    fn list_exports(&self, readonly: bool) -> Result<Vec<ExportEntry>, Error> {
        Layer::list_exports(self, readonly)
    }
    fn default_export(&self, readonly: bool) -> Option<String> {
        Layer::default_export(self, readonly)
    }
    fn open(&self, readonly: bool, export_name: &str) -> Result<Arc<dyn BelowConnection>, Error> {
        Ok(Layer::open(self, readonly, export_name)?)
    }
}
