//! A plugin component: loaded once, instantiated as its instance model asks, its calls bounded
//! by a deadline, and replaced when it traps.

use super::bindings::{
    GuestError, NbdPlugin, NbdPluginPre, PluginExports, PluginInfo, WIT_PACKAGE,
};
use super::engine::{self, EPOCH_TICK};
use super::grants::Grants;
use super::store::{self, LayerCtx};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::error::Context as _;
use wasmtime::{bail, format_err, Result};
use wasmtime::{Engine, Store, Trap};

/// Limits applied to every instance of a component.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    pub memory: u64,
    /// Wall-clock deadline for one call into the component.
    pub call_timeout: Duration,
}

impl Limits {
    fn deadline_ticks(&self) -> u64 {
        (self.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

/// A loaded plugin: compiled, linked, described and configured.
pub struct PluginComponent {
    /// What the user named on the command line (a built-in name or a path).
    pub source: String,
    pub info: PluginInfo,
    name: Arc<str>,
    pre: NbdPluginPre<LayerCtx>,
    limits: Limits,
    grants: Arc<Grants>,
    /// Every config call, in order, to replay into new instances.
    config: Vec<(String, String)>,
}

/// One instance of a component in its own store.
pub struct Instance {
    pub(crate) store: Store<LayerCtx>,
    bindings: NbdPlugin,
    deadline_ticks: u64,
}

/// How a call into a component can fail.
#[derive(Debug)]
pub enum CallError {
    /// The component returned an error value; the instance is fine.
    Guest(GuestError),
    /// The component trapped, overran its deadline or its memory; the instance is dead.
    Trap(wasmtime::Error),
}

impl Instance {
    /// Run one call under the per-call deadline.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(
            &PluginExports,
            &mut Store<LayerCtx>,
        ) -> wasmtime::Result<std::result::Result<R, GuestError>>,
    ) -> std::result::Result<R, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = f(self.bindings.nbdbox_plugin_plugin(), &mut self.store);
        self.store.data_mut().buffers.clear();
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CallError::Guest(e)),
            Err(trap) => Err(CallError::Trap(trap)),
        }
    }

    /// Run a lifecycle call, turning either failure into a message for the operator.
    fn lifecycle(
        &mut self,
        what: &str,
        f: impl FnOnce(
            &PluginExports,
            &mut Store<LayerCtx>,
        ) -> wasmtime::Result<std::result::Result<(), GuestError>>,
    ) -> Result<()> {
        self.call(f)
            .map_err(|e| format_err!("{what}: {}", describe_failure(&e, self.deadline_ticks)))
    }
}

/// A one-line account of a failed call, for the log.
pub fn describe_failure(e: &CallError, deadline_ticks: u64) -> String {
    match e {
        CallError::Guest(g) => g
            .message
            .clone()
            .unwrap_or_else(|| format!("{:?}", g.errno).to_lowercase()),
        CallError::Trap(t) => match t.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "call exceeded its deadline of {} ms",
                deadline_ticks * EPOCH_TICK.as_millis() as u64
            ),
            _ => format!("trapped: {}", t.root_cause()),
        },
    }
}

/// Build the linker every plugin instance is created from.
pub fn new_linker(engine: &Engine) -> Result<Linker<LayerCtx>> {
    let mut linker = Linker::new(engine);
    store::add_wasi_plumbing(&mut linker)?;
    NbdPlugin::add_to_linker::<LayerCtx, wasmtime::component::HasSelf<LayerCtx>>(
        &mut linker,
        |ctx| ctx,
    )?;
    Ok(linker)
}

/// Refuse a component built for another version of the WIT package, naming both.
fn check_wit_version(engine: &Engine, component: &Component, source: &str) -> Result<()> {
    let ty = component.component_type();
    let exported: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let wanted = format!("{}", WIT_PACKAGE.replace('@', "/plugin@"));
    if exported.iter().any(|n| *n == wanted) {
        return Ok(());
    }
    if let Some(other) = exported
        .iter()
        .find(|n| n.starts_with("nbdbox:plugin/plugin@"))
    {
        let version = other.rsplit('@').next().unwrap_or("?");
        bail!("plugin '{source}' was built for nbdbox:plugin@{version}, but this nbdbox needs {WIT_PACKAGE}; rebuild it against the WIT of this nbdbox");
    }
    bail!(
        "'{source}' is not an nbdbox plugin: it does not export {wanted} (it exports: {})",
        exported.join(", ")
    )
}

impl PluginComponent {
    /// Compile (or load from cache), check, link and describe a plugin component.
    pub fn load(
        engine: &Engine,
        linker: &Linker<LayerCtx>,
        source: &str,
        wasm: &[u8],
        limits: Limits,
    ) -> Result<PluginComponent> {
        let component = engine::load_component(engine, wasm)
            .with_context(|| format!("cannot load plugin '{source}'"))?;
        check_wit_version(engine, &component, source)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            format_err!("cannot load plugin '{source}': {e:#} (plugins get no WASI filesystem or sockets: files come as grants through file/directory config keys)")
        })?;
        let pre = NbdPluginPre::new(pre)?;
        let mut plugin = PluginComponent {
            source: source.to_owned(),
            info: empty_info(),
            name: Arc::from(source),
            pre,
            limits,
            grants: Arc::default(),
            config: Vec::new(),
        };
        let mut probe = plugin.bare_instance()?;
        plugin.info = probe.call(|p, s| p.call_describe(s).map(Ok)).map_err(|e| {
            format_err!(
                "{source}: describe: {}",
                describe_failure(&e, probe.deadline_ticks)
            )
        })?;
        plugin.name = Arc::from(plugin.info.name.as_str());
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Install the grants opened for this plugin's file/directory keys.
    pub fn set_grants(&mut self, grants: Grants) {
        self.grants = Arc::new(grants);
    }

    /// Record a config call to replay into every instance.
    pub fn push_config(&mut self, key: &str, value: &str) {
        self.config.push((key.to_owned(), value.to_owned()));
    }

    fn bare_instance(&self) -> Result<Instance> {
        let ctx = LayerCtx::new(self.name.clone(), self.limits.memory, self.grants.clone());
        let mut store = Store::new(self.pre.engine(), ctx);
        store.limiter(|ctx| &mut ctx.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = self.limits.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .with_context(|| format!("instantiating plugin '{}'", self.source))?;
        Ok(Instance {
            store,
            bindings,
            deadline_ticks,
        })
    }

    /// A new instance with the configuration applied: config*, config-complete (and, unless
    /// `dump_only`, get-ready), as nbdkit runs them.
    pub fn configured_instance(&self, dump_only: bool) -> Result<Instance> {
        let mut instance = self.bare_instance()?;
        for (key, value) in &self.config {
            instance.lifecycle(&format!("{key}={value}"), |p, s| {
                p.call_config(s, key, value)
            })?;
        }
        if !dump_only {
            instance.lifecycle("config-complete", |p, s| p.call_config_complete(s))?;
            instance.lifecycle("get-ready", |p, s| p.call_get_ready(s))?;
        }
        Ok(instance)
    }
}

fn empty_info() -> PluginInfo {
    PluginInfo {
        name: String::new(),
        version: String::new(),
        description: String::new(),
        magic_config_key: None,
        config_keys: Vec::new(),
        thread_model: super::bindings::ThreadModel::SerializeAllRequests,
        shared_state: true,
    }
}

/// Where an instance lives: created on demand, dropped when it traps. Shared by all
/// connections for a shared-state plugin, one per connection otherwise.
pub struct InstanceSlot {
    plugin: Arc<PluginComponent>,
    state: Mutex<SlotState>,
}

pub struct SlotState {
    instance: Option<Instance>,
    /// Bumped each time the instance is replaced; connection handles of an older
    /// generation are gone with the old instance.
    pub generation: u64,
}

impl InstanceSlot {
    pub fn new(plugin: Arc<PluginComponent>, instance: Option<Instance>) -> InstanceSlot {
        InstanceSlot {
            plugin,
            state: Mutex::new(SlotState {
                instance,
                generation: 0,
            }),
        }
    }

    pub fn plugin(&self) -> &Arc<PluginComponent> {
        &self.plugin
    }

    pub fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock leaves nothing half-done in the slot itself.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SlotState {
    /// The live instance, creating (and configuring) one if the last one died.
    pub fn instance(&mut self, plugin: &PluginComponent) -> Result<&mut Instance> {
        if self.instance.is_none() {
            self.instance = Some(plugin.configured_instance(false)?);
        }
        Ok(self.instance.as_mut().expect("just created"))
    }

    /// Drop a trapped instance; the next call creates a fresh one.
    pub fn discard(&mut self) {
        self.instance = None;
        self.generation += 1;
    }
}
