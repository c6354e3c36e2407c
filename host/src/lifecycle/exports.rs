//! The exports a configuration asks for, built: at startup from the [`Config`], and again
//! from the config file at each SIGHUP, whose table then replaces the one being served.
//! An export whose settings did not change is kept as it is (its instances, its data, its
//! open grants); one a reload took out is cleaned up once no connection uses it.
//!
//! [`Config`]: crate::config::Config

use crate::api::{LayerInfo, ThreadModel};
use crate::backend::{Export, ExportSpec, Stage};
use crate::config::file::{self, print::Stack, Fixed, Source};
use crate::config::{config_pairs, Config, ExportConfig};
use crate::log;
use crate::runtime::{LayerComponent, Process, Role, Runtime};
use crate::server::{Named, Server, Table};
use anyhow::{anyhow, bail, Context as _, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What building an export needs besides its own settings.
#[derive(Clone)]
pub struct Builder {
    pub runtime: Arc<Runtime>,
    pub process: Process,
    /// `-t`.
    pub threads: usize,
    /// Whether a password may be read from stdin (not under `-s`, nor on a reload).
    pub stdin_free: bool,
}

/// An export's components, loaded.
pub struct Layers {
    /// Outermost first.
    pub filters: Vec<Arc<LayerComponent>>,
    pub plugin: Arc<LayerComponent>,
}

impl Layers {
    /// What each layer declares, outermost first.
    fn infos(&self) -> Vec<&LayerInfo> {
        self.filters
            .iter()
            .chain([&self.plugin])
            .map(|layer| &layer.info)
            .collect()
    }
}

/// A configured export with the settings it was built from.
pub struct Built {
    pub config: ExportConfig,
    pub export: Arc<Export>,
}

/// `result`, its error prefixed with where the config file wrote `export`.
fn located<T>(export: &ExportConfig, result: Result<T>) -> Result<T> {
    match file::origin(export) {
        Some(origin) => result.with_context(|| origin),
        None => result,
    }
}

impl Builder {
    /// Load an export's components, each checked against its pinned digest.
    pub fn load(&self, export: &ExportConfig) -> Result<Layers> {
        let load = |spec: &str, role| {
            let pin = export
                .pins
                .iter()
                .find(|pin| pin.component == spec)
                .map(|pin| &pin.sha256);
            let loaded = self.runtime.load(spec, role, export.limits, pin).map(Arc::new);
            located(export, loaded.map_err(anyhow::Error::from))
        };
        let plugin = export.plugin.as_deref().ok_or_else(|| anyhow!("no plugin given"))?;
        Ok(Layers {
            filters: export
                .filters
                .iter()
                .map(|filter| load(filter, Role::Filter))
                .collect::<Result<_>>()?,
            plugin: load(plugin, Role::Plugin)?,
        })
    }

    /// Configure one export as far as `stage`: what the file wrote checked against the
    /// layers, grants opened, every layer configured.
    pub fn configure(&self, export: &ExportConfig, layers: Layers, stage: Stage) -> Result<Export> {
        let mut export = export.clone();
        file::settle(&mut export, &layers.infos())?;
        let spec = ExportSpec {
            params: config_pairs(&export.params, layers.plugin.info.magic_config_key.as_deref())?,
            filters: layers.filters,
            plugin: layers.plugin,
            readonly: export.readonly,
            limits: export.limits,
            threads: self.threads,
            stdin_free: self.stdin_free,
        };
        Export::configure(spec, stage, &self.process).map_err(|e| match file::origin_of(&export, &e.0) {
            Some(origin) => anyhow!("{origin}: {e}"),
            None => e.into(),
        })
    }

    /// The table `exports` make, `default` the one "" selects. An export of `running` whose
    /// settings are the same is served on as it is.
    pub fn table(
        &self,
        exports: &[ExportConfig],
        default: Option<&str>,
        running: &[Built],
    ) -> Result<(Table, Vec<Built>)> {
        let mut built: Vec<Built> = Vec::with_capacity(exports.len());
        let mut fresh = Vec::new();
        for config in exports {
            let export = match running.iter().find(|b| same_settings(&b.config, config)) {
                Some(kept) => Ok(kept.export.clone()),
                None => self
                    .load(config)
                    .and_then(|layers| self.configure(config, layers, Stage::Serve))
                    .map(Arc::new)
                    .inspect(|export| fresh.push(export.clone())),
            };
            let export = export.and_then(|export| {
                if exports.len() > 1 && export.thread_model() == ThreadModel::SerializeConnections {
                    bail!(
                        "{}: its layers serve one connection at a time (serialize_connections), which a \
                         table of several exports cannot do before a client names one: serve it alone",
                        file::origin(config).unwrap_or_default()
                    );
                }
                Ok(export)
            });
            match export {
                Ok(export) => built.push(Built {
                    config: config.clone(),
                    export,
                }),
                Err(e) => {
                    // nbdkit's .cleanup follows every get_ready.
                    for export in fresh {
                        export.cleanup();
                    }
                    return Err(e);
                }
            }
        }
        let named = built
            .iter()
            .filter_map(|b| {
                Some(Named {
                    name: b.config.name.clone()?,
                    description: b.config.description.clone(),
                    export: b.export.clone(),
                })
            })
            .collect();
        let any_name = built.iter().find(|b| b.config.name.is_none()).map(|b| b.export.clone());
        Ok((Table::new(named, any_name, default), built))
    }

    /// `--dump-config-toml`: the file equivalent to `config`.
    pub fn config_toml(&self, config: &Config) -> Result<String> {
        let mut loaded = Vec::with_capacity(config.exports.len());
        for export in &config.exports {
            let layers = self.load(export)?;
            let mut export = export.clone();
            file::settle(&mut export, &layers.infos())?;
            loaded.push((export, layers));
        }
        let stacks: Vec<Stack> = loaded
            .iter()
            .map(|(export, layers)| Stack {
                export,
                filters: layers.filters.iter().map(|filter| &filter.info).collect(),
                plugin: &layers.plugin.info,
            })
            .collect();
        Ok(file::print::print(config, &stacks)?)
    }
}

/// Whether an export built from `running` serves what `wanted` asks for: everything but
/// the description (which the table holds) and the lines it was written on.
fn same_settings(running: &ExportConfig, wanted: &ExportConfig) -> bool {
    let placed = |export: &ExportConfig| {
        export.written.as_ref().map(|written| {
            let places: Vec<(usize, bool)> = written.params.iter().map(|p| (p.layer, p.grant)).collect();
            (written.file.clone(), places)
        })
    };
    // Every field, named: one added to `ExportConfig` must be compared too.
    let ExportConfig {
        name,
        description: _,
        plugin,
        filters,
        params,
        readonly,
        limits,
        pins,
        written: _,
    } = running;
    *name == wanted.name
        && *plugin == wanted.plugin
        && *filters == wanted.filters
        && *params == wanted.params
        && *readonly == wanted.readonly
        && limits.memory == wanted.limits.memory
        && limits.call_timeout == wanted.limits.call_timeout
        && *pins == wanted.pins
        && placed(running) == placed(wanted)
}

/// What a reload may not change, if it does.
fn fixed_change(running: &Fixed, wanted: &Fixed) -> Option<&'static str> {
    if running.listen != wanted.listen {
        Some("[listen]")
    } else if running.tls != wanted.tls {
        Some("[tls]")
    } else if running != wanted {
        Some("[server]")
    } else {
        None
    }
}

/// SIGHUP: read the config file again and serve the table it makes.
pub struct Reloader {
    pub builder: Builder,
    pub server: Arc<Server>,
    pub source: Source,
    /// What the table being served was built from.
    pub running: Vec<Built>,
    /// Exports a reload took out of the table, until no connection uses them.
    retired: Vec<Arc<Export>>,
}

impl Reloader {
    pub fn new(builder: Builder, server: Arc<Server>, source: Source, running: Vec<Built>) -> Reloader {
        Reloader {
            builder,
            server,
            source,
            running,
            retired: Vec::new(),
        }
    }

    /// Reload at each SIGHUP (`hangups` readable) until shutdown. The thread returns the
    /// retired exports still in use, for the final cleanup.
    pub fn spawn(self, hangups: OwnedFd) -> std::io::Result<JoinHandle<Vec<Arc<Export>>>> {
        std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || self.run(hangups))
    }

    fn run(mut self, hangups: OwnedFd) -> Vec<Arc<Export>> {
        let shutdown = self.builder.process.shutdown.clone();
        let log = self.builder.process.log.clone();
        loop {
            let mut fds = [
                PollFd::new(hangups.as_fd(), PollFlags::POLLIN),
                PollFd::new(shutdown.wake_fd(), PollFlags::POLLIN),
            ];
            // While retired exports wait for their last connection, look again each second.
            let timeout = match self.retired.is_empty() {
                true => PollTimeout::NONE,
                false => PollTimeout::from(1000u16),
            };
            let _ = nix::poll::poll(&mut fds, timeout);
            let hung_up = fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            if shutdown.requested() {
                return self.retired;
            }
            self.sweep();
            if !hung_up {
                continue;
            }
            // One reload answers every SIGHUP so far.
            let mut drained = [0; 64];
            while nix::unistd::read(hangups.as_raw_fd(), &mut drained).is_ok_and(|n| n > 0) {}
            let path = self.source.path.display().to_string();
            match self.reload() {
                Ok((served, kept)) => log::debug!(
                    log,
                    "SIGHUP: {path} reloaded: {served} exports, {kept} of them as they were"
                ),
                Err(e) => log::error!(log, "SIGHUP: {path} not reloaded, the exports serve as before: {e:#}"),
            }
        }
    }

    /// Read the file, build its table and serve it: how many exports, and how many of them
    /// were kept as they were.
    fn reload(&mut self) -> Result<(usize, usize)> {
        let fresh = file::read(&self.source.path, self.source.limits)?;
        if let Some(section) = fixed_change(&self.source.fixed, &fresh.fixed) {
            bail!("{section} changed, which only a restart applies");
        }
        file::check_limits(&fresh.exports, self.builder.process.budget.total())?;
        let (table, running) = self
            .builder
            .table(&fresh.exports, fresh.default_export.as_deref(), &self.running)?;
        drop(self.server.exports.replace(table));
        let before = std::mem::replace(&mut self.running, running);
        let (kept, gone): (Vec<Built>, Vec<Built>) = before
            .into_iter()
            .partition(|old| self.running.iter().any(|new| Arc::ptr_eq(&new.export, &old.export)));
        self.retired.extend(gone.into_iter().map(|built| built.export));
        self.sweep();
        Ok((self.running.len(), kept.len()))
    }

    /// Clean up the retired exports no connection holds any more: nothing else can reach
    /// them once only this list does.
    fn sweep(&mut self) {
        self.retired.retain(|export| {
            let in_use = Arc::strong_count(export) > 1;
            if !in_use {
                export.cleanup();
            }
            in_use
        });
    }
}
