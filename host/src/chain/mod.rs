//! The chain of layers a request travels through after validation: the stack of filter and
//! plugin components, with nbdkit's server-side emulation in front of it (§3.5 of the nbdkit
//! digest).
//!
//! ```text
//!   connection ──► Context (cached size/caps, emulation, errno mapping)
//!              ──► filter ──► filter ──► plugin   (each its own component instance)
//! ```

mod context;

pub use context::Context;

use crate::log;
use crate::protocol::NbdError;
use crate::runtime::bindings::{Export, ThreadModel};
use crate::runtime::{CallError, Instance, InstanceSlot, Stack};
use std::sync::{Arc, Mutex};

/// The process-wide chain: the stack and how its instances are shared.
pub struct Chain {
    /// The instance made at startup: serves every connection of a shared-state stack, and
    /// answers export listings for the others.
    primary: Arc<InstanceSlot>,
    /// nbdkit's serialize_all_requests across per-connection instances.
    request_lock: Option<Arc<Mutex<()>>>,
}

impl Chain {
    pub fn new(stack: Stack, primary: Instance) -> Chain {
        let stack = Arc::new(stack);
        let serialize_all = !stack.shared_state()
            && matches!(
                stack.thread_model(),
                ThreadModel::SerializeAllRequests | ThreadModel::SerializeConnections
            );
        Chain {
            primary: Arc::new(InstanceSlot::new(stack, Some(primary))),
            request_lock: serialize_all.then(Arc::default),
        }
    }

    pub fn stack(&self) -> &Arc<Stack> {
        self.primary.stack()
    }

    /// NBD_OPT_LIST: the stack's exports, or the single default export "".
    pub fn list_exports(&self, readonly: bool) -> Result<Vec<Export>, NbdError> {
        let stack = self.stack();
        let mut slot = self.primary.lock();
        let result = match slot.instance(stack) {
            Ok(instance) => instance.call(|p, s| p.call_list_exports(s, readonly)),
            Err(e) => {
                log::error!("{}: {e:#}", stack.name());
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
                report(stack, &e);
                Err(NbdError::Io)
            }
        }
    }

    /// Open the export for one connection (NBD_OPT_GO / INFO / EXPORT_NAME).
    pub fn open(&self, readonly: bool, export_name: &str) -> Result<Context, String> {
        let stack = self.stack();
        let slot = if stack.shared_state() {
            self.primary.clone()
        } else {
            let instance = stack.instantiate(false).map_err(|e| format!("{e:#}"))?;
            Arc::new(InstanceSlot::new(stack.clone(), Some(instance)))
        };
        Context::open(slot, self.request_lock.clone(), readonly, export_name)
    }
}

/// Log a failed call (the caller has already discarded a trapped instance).
fn report(stack: &Stack, e: &CallError) {
    let what = crate::runtime::component::describe_failure(e, stack.plugin().limits().deadline_ticks());
    match e {
        CallError::Guest(g) if g.message.is_some() => log::error!("{}: {what}", stack.name()),
        CallError::Guest(_) => {}
        CallError::Trap(_) => {
            // A plugin that keeps the disk in its own memory loses it with its instance.
            let lost = if stack.info().shared_state {
                " and the data it held is lost"
            } else {
                ""
            };
            log::error!("{what}; the instance is replaced{lost}");
        }
    }
}
