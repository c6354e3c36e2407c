//! The chain of layers a request travels through after validation: today the plugin, with
//! nbdkit's server-side emulation in front of it (§3.5 of the nbdkit digest).
//!
//! ```text
//!   connection ──► Context (cached size/caps, emulation, errno mapping) ──► plugin instance
//! ```

mod context;

pub use context::Context;

use crate::log;
use crate::protocol::NbdError;
use crate::runtime::bindings::{Export, ThreadModel};
use crate::runtime::{CallError, Instance, InstanceSlot, PluginComponent};
use std::sync::{Arc, Mutex};

/// The process-wide stack: the plugin and how its instances are shared.
pub struct Chain {
    /// The instance made at startup: serves every connection of a shared-state plugin, and
    /// answers export listings for the others.
    primary: Arc<InstanceSlot>,
    /// nbdkit's serialize_all_requests across per-connection instances.
    request_lock: Option<Arc<Mutex<()>>>,
}

impl Chain {
    pub fn new(plugin: PluginComponent, primary: Instance) -> Chain {
        let plugin = Arc::new(plugin);
        let serialize_all = !plugin.info.shared_state
            && matches!(
                plugin.info.thread_model,
                ThreadModel::SerializeAllRequests | ThreadModel::SerializeConnections
            );
        Chain {
            primary: Arc::new(InstanceSlot::new(plugin, Some(primary))),
            request_lock: serialize_all.then(Arc::default),
        }
    }

    pub fn plugin(&self) -> &Arc<PluginComponent> {
        self.primary.plugin()
    }

    /// NBD_OPT_LIST: the plugin's exports, or the single default export "".
    pub fn list_exports(&self, readonly: bool) -> Result<Vec<Export>, NbdError> {
        let plugin = self.plugin();
        let mut slot = self.primary.lock();
        let result = match slot.instance(plugin) {
            Ok(instance) => instance.call(|p, s| p.call_list_exports(s, readonly)),
            Err(e) => {
                log::error!("{}: {e:#}", plugin.name());
                return Err(NbdError::Io);
            }
        };
        match result {
            Ok(exports) if exports.is_empty() => Ok(vec![Export {
                name: String::new(),
                description: None,
            }]),
            Ok(exports) => Ok(exports),
            Err(e) => {
                if matches!(e, CallError::Trap(_)) {
                    slot.discard();
                }
                report(plugin, &e);
                Err(NbdError::Io)
            }
        }
    }

    /// Open the export for one connection (NBD_OPT_GO / INFO / EXPORT_NAME).
    pub fn open(&self, readonly: bool, export_name: &str) -> Result<Context, String> {
        let plugin = self.plugin();
        let slot = if plugin.info.shared_state {
            self.primary.clone()
        } else {
            let instance = plugin
                .configured_instance(false)
                .map_err(|e| format!("{e:#}"))?;
            Arc::new(InstanceSlot::new(plugin.clone(), Some(instance)))
        };
        Context::open(slot, self.request_lock.clone(), readonly, export_name)
    }
}

/// Log a failed call (the caller has already discarded a trapped instance).
fn report(plugin: &PluginComponent, e: &CallError) {
    let deadline_ticks = (plugin.limits().call_timeout.as_millis()
        / crate::runtime::engine::EPOCH_TICK.as_millis()) as u64;
    let what = crate::runtime::plugin::describe_failure(e, deadline_ticks);
    match e {
        CallError::Guest(g) if g.message.is_some() => log::error!("{}: {what}", plugin.name()),
        CallError::Guest(_) => {}
        CallError::Trap(_) => {
            let lost = if plugin.info.shared_state {
                " and the data it held is lost"
            } else {
                ""
            };
            log::error!("{}: {what}; the instance is replaced{lost}", plugin.name());
        }
    }
}
