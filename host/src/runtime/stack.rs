//! A stack: the filters (outermost first) and the plugin, configured as one, instantiated as
//! one — each layer in its own store, a filter's store owning the layer below — and replaced
//! as one when any layer traps.

use super::bindings::{PluginInfo, ThreadModel};
use super::component::{Instance, LayerComponent};
use super::grants::Grants;
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::Result;

pub struct Stack {
    /// Outermost filter first, the plugin last.
    layers: Vec<LayerComponent>,
    grants: Arc<Grants>,
    /// Every config call, in order, to replay into new instances.
    config: Vec<(String, String)>,
}

fn rank(model: ThreadModel) -> u8 {
    match model {
        ThreadModel::SerializeConnections => 0,
        ThreadModel::SerializeAllRequests => 1,
        ThreadModel::SerializeRequests => 2,
        ThreadModel::Parallel => 3,
    }
}

impl Stack {
    /// `filters` outermost first, as on the command line.
    pub fn new(filters: Vec<LayerComponent>, plugin: LayerComponent) -> Stack {
        let mut layers = filters;
        layers.push(plugin);
        Stack {
            layers,
            grants: Arc::default(),
            config: Vec::new(),
        }
    }

    pub fn plugin(&self) -> &LayerComponent {
        self.layers.last().expect("a stack has a plugin")
    }

    pub fn info(&self) -> &PluginInfo {
        &self.plugin().info
    }

    /// Filters, outermost first.
    pub fn filters(&self) -> &[LayerComponent] {
        &self.layers[..self.layers.len() - 1]
    }

    pub fn name(&self) -> &str {
        self.plugin().name()
    }

    /// The most restrictive thread model of all layers, as nbdkit computes it.
    pub fn thread_model(&self) -> ThreadModel {
        self.layers
            .iter()
            .map(|l| l.info.thread_model)
            .min_by_key(|&m| rank(m))
            .expect("a stack has a plugin")
    }

    /// True when any layer keeps state every connection must see: then one instance of the
    /// whole stack serves all connections.
    pub fn shared_state(&self) -> bool {
        self.layers.iter().any(|l| l.info.shared_state)
    }

    pub fn set_grants(&mut self, grants: Grants) {
        self.grants = Arc::new(grants);
    }

    pub fn push_config(&mut self, key: &str, value: &str) {
        self.config.push((key.to_owned(), value.to_owned()));
    }

    /// A new instance of the whole stack with the configuration applied: config* and (unless
    /// `dump_only`) config-complete and get-ready, called on the outermost layer, which passes
    /// them down as nbdkit's filters do.
    pub fn instantiate(&self, dump_only: bool) -> Result<Instance> {
        let slept = Arc::default();
        let mut below: Option<Instance> = None;
        for layer in self.layers.iter().rev() {
            below = Some(layer.instantiate(self.grants.clone(), below, Arc::clone(&slept))?);
        }
        let mut top = below.expect("a stack has a plugin");
        for (key, value) in &self.config {
            top.lifecycle(&format!("{key}={value}"), |p, s| p.call_config(s, key, value))?;
        }
        if !dump_only {
            top.lifecycle("config-complete", |p, s| p.call_config_complete(s))?;
            top.lifecycle("get-ready", |p, s| p.call_get_ready(s))?;
        }
        Ok(top)
    }
}

/// Where a stack instance lives: created on demand, dropped when it traps. Shared by all
/// connections for a shared-state stack, one per connection otherwise.
pub struct InstanceSlot {
    stack: Arc<Stack>,
    state: Mutex<SlotState>,
}

pub struct SlotState {
    instance: Option<Instance>,
    /// Bumped each time the instance is replaced; connection handles of an older
    /// generation went with the old instance.
    pub generation: u64,
}

impl InstanceSlot {
    pub fn new(stack: Arc<Stack>, instance: Option<Instance>) -> InstanceSlot {
        InstanceSlot {
            stack,
            state: Mutex::new(SlotState {
                instance,
                generation: 0,
            }),
        }
    }

    pub fn stack(&self) -> &Arc<Stack> {
        &self.stack
    }

    pub fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock leaves nothing half-done in the slot itself.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SlotState {
    /// The live instance, creating (and configuring) one if the last one died.
    pub fn instance(&mut self, stack: &Stack) -> Result<&mut Instance> {
        if self.instance.is_none() {
            self.instance = Some(stack.instantiate(false)?);
        }
        Ok(self.instance.as_mut().expect("just created"))
    }

    /// Drop a trapped instance; the next call creates a fresh one.
    pub fn discard(&mut self) {
        self.instance = None;
        self.generation += 1;
    }
}
