//! One component (plugin or filter): compiled, checked, linked and described; and its
//! instances, each in its own store, each call bounded by a deadline.

use super::bindings::{filter_world, GuestError, PluginExportIndices, PluginExports, PluginInfo, WIT_PACKAGE};
use super::engine::{self, EPOCH_TICK};
use super::grants::Grants;
use super::store::{self, LayerCtx};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::error::Context as _;
use wasmtime::{bail, format_err, Engine, Result, Store, Trap, UpdateDeadline};

/// Limits applied to every instance of a component.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    pub memory: u64,
    /// Wall-clock deadline for one call into the component.
    pub call_timeout: Duration,
}

impl Limits {
    pub fn deadline_ticks(&self) -> u64 {
        (self.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

/// Whether a component serves as the plugin or as a filter above it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Plugin,
    Filter,
}

/// A loaded component.
pub struct LayerComponent {
    /// What the user named on the command line (a built-in name or a path).
    pub source: String,
    pub info: PluginInfo,
    pub role: Role,
    name: Arc<str>,
    pre: InstancePre<LayerCtx>,
    exports: PluginExportIndices,
    limits: Limits,
}

/// One instance of a component in its own store; a filter's store owns the layer below.
pub struct Instance {
    pub(crate) store: Store<LayerCtx>,
    exports: PluginExports,
    deadline_ticks: u64,
}

/// How a call into a component can fail.
#[derive(Debug)]
pub enum CallError {
    /// The component returned an error value; the instance is fine.
    Guest(GuestError),
    /// The component (or a layer below it) trapped, overran its deadline or its memory;
    /// the instance is dead.
    Trap(wasmtime::Error),
}

impl Instance {
    /// Run one call under the per-call deadline.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&PluginExports, &mut Store<LayerCtx>) -> Result<std::result::Result<R, GuestError>>,
    ) -> std::result::Result<R, CallError> {
        self.store.data_mut().start_call();
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = f(&self.exports, &mut self.store);
        self.store.data_mut().buffers.clear();
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CallError::Guest(e)),
            // Each layer a trap passes through adds its name; the innermost one is the culprit.
            Err(trap) => Err(CallError::Trap(trap.context(format!("{LAYER_CONTEXT}{}", self.name())))),
        }
    }

    /// Run a lifecycle call, turning either failure into a message for the operator.
    pub fn lifecycle(
        &mut self,
        what: &str,
        f: impl FnOnce(&PluginExports, &mut Store<LayerCtx>) -> Result<std::result::Result<(), GuestError>>,
    ) -> Result<()> {
        let deadline_ticks = self.deadline_ticks;
        self.call(f)
            .map_err(|e| format_err!("{what}: {}", describe_failure(&e, deadline_ticks)))
    }

    /// This layer's name, for messages.
    pub fn name(&self) -> &str {
        &self.store.data().name
    }
}

/// How a trap names the layers it passed through.
const LAYER_CONTEXT: &str = "in layer ";

/// A one-line account of a failed call, for the log; a trap names the layer it happened in.
pub fn describe_failure(e: &CallError, deadline_ticks: u64) -> String {
    match e {
        CallError::Guest(g) => g
            .message
            .clone()
            .unwrap_or_else(|| format!("{:?}", g.errno).to_lowercase()),
        CallError::Trap(t) => {
            let layer = t
                .chain()
                .filter_map(|c| c.to_string().strip_prefix(LAYER_CONTEXT).map(str::to_owned))
                .last();
            let layer = layer.unwrap_or_else(|| "?".into());
            match t.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => format!(
                    "{layer}: call exceeded its deadline of {} ms",
                    deadline_ticks * EPOCH_TICK.as_millis() as u64
                ),
                _ => format!("{layer}: trapped: {}", t.root_cause()),
            }
        }
    }
}

/// Build the linker every instance is created from: the WASI plumbing, the host interfaces,
/// and the `plugin` import a filter reaches its next layer through (unused by plugins).
pub fn new_linker(engine: &Engine) -> Result<Linker<LayerCtx>> {
    use super::bindings::nbdbox::plugin::{buffers, grants, host, types};
    let mut linker = Linker::new(engine);
    store::add_wasi_plumbing(&mut linker)?;
    types::add_to_linker::<LayerCtx, HasSelf<LayerCtx>>(&mut linker, |ctx| ctx)?;
    host::add_to_linker::<LayerCtx, HasSelf<LayerCtx>>(&mut linker, |ctx| ctx)?;
    buffers::add_to_linker::<LayerCtx, HasSelf<LayerCtx>>(&mut linker, |ctx| ctx)?;
    grants::add_to_linker::<LayerCtx, HasSelf<LayerCtx>>(&mut linker, |ctx| ctx)?;
    filter_world::nbdbox::plugin::plugin::add_to_linker::<LayerCtx, HasSelf<LayerCtx>>(&mut linker, |ctx| ctx)?;
    Ok(linker)
}

/// Refuse a component built for another version of the WIT package, naming both.
fn check_wit_version(engine: &Engine, component: &Component, source: &str) -> Result<()> {
    let ty = component.component_type();
    let exported: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let wanted = WIT_PACKAGE.replace('@', "/plugin@");
    if exported.contains(&wanted) {
        return Ok(());
    }
    if let Some(other) = exported.iter().find(|n| n.starts_with("nbdbox:plugin/plugin@")) {
        let version = other.rsplit('@').next().unwrap_or("?");
        bail!("'{source}' was built for nbdbox:plugin@{version}, but this nbdbox needs {WIT_PACKAGE}; rebuild it against the WIT of this nbdbox");
    }
    bail!(
        "'{source}' is not an nbdbox component: it does not export {wanted} (it exports: {})",
        exported.join(", ")
    )
}

impl LayerComponent {
    /// Compile (or load from cache), check, link and describe a component.
    pub fn load(
        engine: &Engine,
        linker: &Linker<LayerCtx>,
        source: &str,
        wasm: &[u8],
        role: Role,
        limits: Limits,
    ) -> Result<LayerComponent> {
        let what = match role {
            Role::Plugin => "plugin",
            Role::Filter => "filter",
        };
        let component =
            engine::load_component(engine, wasm).with_context(|| format!("cannot load {what} '{source}'"))?;
        check_wit_version(engine, &component, source)?;
        let imports_next = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name == WIT_PACKAGE.replace('@', "/plugin@"));
        match (role, imports_next) {
            (Role::Plugin, true) => bail!("'{source}' is a filter (it imports a next layer): use --filter={source}"),
            (Role::Filter, false) => bail!("'{source}' is a plugin, not a filter"),
            _ => {}
        }
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            format_err!("cannot load {what} '{source}': {e:#} (components get no WASI filesystem or sockets: files come as grants through file/directory config keys)")
        })?;
        let exports = PluginExportIndices::new(&pre)?;
        let mut layer = LayerComponent {
            source: source.to_owned(),
            info: placeholder_info(),
            role,
            name: Arc::from(source),
            pre,
            exports,
            limits,
        };
        let mut probe = layer.instantiate(Arc::default(), None, Arc::default())?;
        layer.info = probe
            .call(|p, s| p.call_describe(s).map(Ok))
            .map_err(|e| format_err!("{source}: describe: {}", describe_failure(&e, limits.deadline_ticks())))?;
        layer.name = Arc::from(layer.info.name.as_str());
        Ok(layer)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A fresh instance; a filter's gets the instance of the layer below it.
    pub fn instantiate(&self, grants: Arc<Grants>, next: Option<Instance>, slept: Arc<AtomicU64>) -> Result<Instance> {
        let ctx = LayerCtx::new(self.name.clone(), self.limits.memory, grants, next.map(Box::new), slept);
        let mut store = Store::new(self.pre.engine(), ctx);
        store.limiter(|ctx| &mut ctx.limits);
        // At the deadline: carry on by the time the stack spent in host.sleep, else trap.
        store.epoch_deadline_callback(|mut ctx| match ctx.data_mut().take_sleep_credit() {
            0 => Err(Trap::Interrupt.into()),
            ticks => Ok(UpdateDeadline::Continue(ticks)),
        });
        let deadline_ticks = self.limits.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);
        let instance = self
            .pre
            .instantiate(&mut store)
            .with_context(|| format!("instantiating '{}'", self.source))?;
        let exports = self.exports.load(&mut store, &instance)?;
        Ok(Instance {
            store,
            exports,
            deadline_ticks,
        })
    }
}

fn placeholder_info() -> PluginInfo {
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

/// Count `duration` of `host.sleep` into a stack's slept ticks (rounded up), which every
/// layer's deadline callback then credits (see `LayerCtx::take_sleep_credit`).
pub(crate) fn add_slept(slept: &AtomicU64, duration: Duration) {
    let ticks = (duration.as_millis() / EPOCH_TICK.as_millis()) as u64 + 1;
    slept.fetch_add(ticks, Ordering::Relaxed);
}
