//! nbdkit's backend layer: the stack of layers an export's requests travel through, with the
//! same gate between every pair of layers (nbdkit's server/backend.c).
//!
//! ```text
//!   server ──► Context(filter) ──gate──► filter component ──next──► Context(plugin) ──gate──► plugin
//!             (size, caps,                                          (validation, emulation,
//!              validation)                                           instance placement)
//! ```
//!
//! * [`Export`]: the layers of one export, configured once, in nbdkit's order.
//! * `layer`: one layer, where its instances live and what it was configured with.
//! * `context`: one open context of a layer, and the gate every call into it passes.
//! * `rules`: nbdkit's per-layer rules as pure functions.
//!
//! This is an abstraction over the runtime: it speaks [`crate::api`] types, and the
//! runtime reaches the layer below a filter only through the traits it implements here.

mod context;
mod layer;
pub mod rules;

pub use context::Context;
pub use layer::Layer;

use crate::api::{ConfigKind, Error, ExportEntry, ThreadModel};
use crate::password;
use crate::runtime::grants::{self, Grant, Grants};
use crate::runtime::network::{self, NetGrant};
use crate::runtime::{LayerComponent, LayerEnv, Limits, Process};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// What an export is made of, before it is configured.
pub struct ExportSpec {
    /// Filters, outermost (nearest the client) first.
    pub filters: Vec<Arc<LayerComponent>>,
    pub plugin: Arc<LayerComponent>,
    /// key=value pairs, in command-line order, given to the outermost layer.
    pub params: Vec<(String, String)>,
    /// Grants are opened read-only, and every connection is read-only.
    pub readonly: bool,
    pub limits: Limits,
    /// The most requests one connection may have in the layers at once (`-t`).
    pub threads: usize,
    /// Whether stdin may be read (for a password given as `-`): not under `-s`.
    pub stdin_free: bool,
}

impl ExportSpec {
    /// Outermost first.
    fn layers(&self) -> impl Iterator<Item = &Arc<LayerComponent>> + Clone {
        self.filters.iter().chain([&self.plugin])
    }
}

/// How far configuration goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `--dump-plugin`: config calls only (nbdkit calls neither config_complete nor
    /// get_ready).
    Describe,
    /// Everything up to get-ready; then the export serves.
    Serve,
}

/// A configured stack of layers serving one export.
pub struct Export {
    /// Outermost first; the plugin last.
    layers: Vec<Arc<Layer>>,
    pub readonly: bool,
    thread_model: ThreadModel,
    /// nbdkit's serialize_all_requests: one request at a time across all connections.
    request_lock: Option<Mutex<()>>,
    /// nbdkit's serialize_connections: one connection at a time.
    connection_lock: Option<Mutex<()>>,
}

/// Why configuring an export failed: the message names what failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open the grants the layers declare keys for: each key of kind file or directory that a
/// layer declares is opened once, by the host, before any component is configured.
fn open_grants(spec: &ExportSpec) -> Result<Grants, ConfigError> {
    let mut grants = Grants::default();
    let layers = spec.layers();
    for (key, value) in &spec.params {
        if grants.contains(key) {
            continue;
        }
        let Some(kind) = layers.clone().find_map(|l| l.info.key(key)).map(|k| k.kind) else {
            continue;
        };
        use crate::api::ConfigKind as Kind;
        let path = Path::new(value);
        let net = |grant: Result<NetGrant, Error>| grant.map(Grant::Net).map_err(|e| e.to_string());
        let grant = match kind {
            Kind::File => grants::open_file(path, spec.readonly).map_err(|e| e.to_string()),
            Kind::OutputFile => grants::open_output(path).map_err(|e| e.to_string()),
            Kind::Directory => grants::open_directory(path, spec.readonly).map_err(|e| e.to_string()),
            Kind::InputFile => grants::open_file(path, true).map_err(|e| e.to_string()),
            Kind::InputDirectory => grants::open_directory(path, true).map_err(|e| e.to_string()),
            Kind::TriggerFile => grants::trigger(path).map_err(|e| e.to_string()),
            Kind::Url => net(network::url_grant(value)),
            Kind::NbdUri => net(network::nbd_uri_grant(value)),
            Kind::UnixSocket => net(network::unix_socket_grant(value)),
            Kind::TcpHost => net(network::tcp_host_grant(value)),
            Kind::TcpPort => net(network::tcp_port_grant(value)),
            Kind::Text | Kind::Size | Kind::Bool | Kind::Password => continue,
        };
        grants.insert(key, grant.map_err(|e| ConfigError(format!("{key}={value}: {e}")))?);
    }
    Ok(grants)
}

impl Export {
    /// Build the stack and configure it as nbdkit does: config (each key=value, outermost
    /// layer first, filters passing on what is not theirs), config-complete, thread models,
    /// then get-ready on every layer from the plugin outwards.
    pub fn configure(spec: ExportSpec, stage: Stage, process: &Process) -> Result<Export, ConfigError> {
        let grants = Arc::new(open_grants(&spec)?);
        // After the shutdown grace, requests still waiting on the network are cut.
        let cut = Arc::downgrade(&grants);
        process.shutdown.on_abort(Box::new(move || {
            if let Some(grants) = cut.upgrade() {
                grants.cut_network();
            }
        }));
        let mut below: Option<Arc<Layer>> = None;
        let mut layers = Vec::new();
        for component in [&spec.plugin].into_iter().chain(spec.filters.iter().rev()) {
            let below_api = below.clone().map(|b| b as Arc<dyn crate::runtime::below::Below>);
            let env = LayerEnv::new(&component.info, spec.limits, process, grants.clone(), below_api);
            let layer =
                Layer::new(component.clone(), Arc::new(env), below.take()).map_err(|e| ConfigError(e.to_string()))?;
            layers.push(layer.clone());
            below = Some(layer);
        }
        layers.reverse();
        let top = layers[0].clone();
        let failed = |what: &str, e: Error| ConfigError(format!("{what}: {e}"));
        for (key, value) in &spec.params {
            let kind = spec.layers().find_map(|l| l.info.key(key)).map(|k| k.kind);
            if kind == Some(ConfigKind::Password) {
                // The secret goes to the component, never into a message.
                let secret =
                    password::read_password(value, spec.stdin_free).map_err(|e| ConfigError(format!("{key}: {e}")))?;
                top.config(key, &secret)
                    .map_err(|e| failed(&format!("{key}=<secret>"), e))?;
            } else {
                top.config(key, value)
                    .map_err(|e| failed(&format!("{key}={value}"), e))?;
            }
        }
        if stage == Stage::Serve {
            top.config_complete().map_err(|e| failed("config-complete", e))?;
        }
        for layer in layers.iter().rev() {
            layer.settle_thread_model().map_err(|e| failed("get-thread-model", e))?;
        }
        let thread_model = top.stack_thread_model();
        if stage == Stage::Serve {
            for layer in layers.iter().rev() {
                layer.get_ready().map_err(|e| failed("get-ready", e))?;
            }
            let lanes = if thread_model == ThreadModel::Parallel {
                spec.threads
            } else {
                1
            };
            for layer in &layers {
                layer.start_serving(lanes);
            }
        }
        Ok(Export {
            layers,
            readonly: spec.readonly,
            thread_model,
            request_lock: (thread_model <= ThreadModel::SerializeAllRequests).then(Mutex::default),
            connection_lock: (thread_model == ThreadModel::SerializeConnections).then(Mutex::default),
        })
    }

    /// Outermost first.
    pub fn layers(&self) -> &[Arc<Layer>] {
        &self.layers
    }

    pub fn plugin(&self) -> &Layer {
        self.layers.last().expect("an export has a plugin")
    }

    /// The most restrictive thread model of all layers.
    pub fn thread_model(&self) -> ThreadModel {
        self.thread_model
    }

    /// How many workers a connection usefully has, given `-t`. When requests take turns (a
    /// thread model below parallel, or a shared layer every request goes through), one, as
    /// nbdkit has for a serializing thread model (server/connections.c): it reads, runs and
    /// answers each request in turn, so one connection's requests never overlap, which
    /// serialize_requests promises. A second worker would only overlap socket I/O with the
    /// layers, at the cost of a wake-up per request: through readahead and retry over
    /// memory, one worker read 7.0 GB/s against 6.3, and 4 connections of 4 KiB random reads
    /// on memory made 191k IOPS against 149k. Otherwise `-t`, each in a lane of its own.
    pub fn useful_workers(&self, threads: usize) -> usize {
        let takes_turns =
            self.thread_model != ThreadModel::Parallel || self.layers.iter().any(|layer| layer.is_shared());
        if takes_turns {
            1
        } else {
            threads.max(1)
        }
    }

    /// Held around each request of an export that serializes all requests.
    pub fn lock_request(&self) -> Option<MutexGuard<'_, ()>> {
        self.request_lock.as_ref().map(lock)
    }

    /// Held for the life of each connection to an export that serializes connections.
    pub fn lock_connection(&self) -> Option<MutexGuard<'_, ()>> {
        self.connection_lock.as_ref().map(lock)
    }

    fn top(&self) -> &Arc<Layer> {
        &self.layers[0]
    }

    /// nbdkit's .preconnect: a new client, before the greeting.
    pub fn preconnect(&self) -> Result<(), Error> {
        let _serial = self.lock_request();
        self.top().preconnect(self.readonly)
    }

    /// NBD_OPT_LIST: the exports the layers list.
    pub fn list_exports(&self) -> Result<Vec<ExportEntry>, Error> {
        let _serial = self.lock_request();
        self.top().list_exports(self.readonly)
    }

    /// The name the default export "" stands for (nbdkit's .default_export).
    pub fn default_export(&self) -> Option<String> {
        let _serial = self.lock_request();
        self.top().default_export(self.readonly)
    }

    /// Open the export for one connection (NBD_OPT_GO / INFO / EXPORT_NAME): open and
    /// prepare every layer, then the size and capabilities every request is checked against.
    pub fn open(&self, export_name: &str) -> Result<Opened, Error> {
        let _serial = self.lock_request();
        let context = self.top().open(self.readonly, export_name)?;
        context.prepare()?;
        match context.size().and_then(|size| Ok((size, context.caps()?))) {
            Ok((size, caps)) => Ok(Opened { context, size, caps }),
            Err(e) => {
                // nbdkit finalizes every prepared context before closing it.
                let _ = context.finalize();
                Err(e)
            }
        }
    }

    /// nbdkit's .cleanup, once, outermost layer first.
    pub fn cleanup(&self) {
        for layer in &self.layers {
            layer.cleanup();
        }
    }
}

/// The export as one connection opened it: the outermost layer's context. Dropping it
/// finalizes and closes every layer.
pub struct Opened {
    context: Arc<Context>,
    /// The outermost layer's size and capabilities, which requests are checked against.
    pub size: u64,
    pub caps: crate::api::Caps,
}

impl std::ops::Deref for Opened {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.context
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        // Failures are logged by the gate; the connection is ending anyway.
        let _ = self.context.finalize();
    }
}
