//! One loaded component (plugin or filter): compiled, checked against the WIT version policy,
//! linked and described. Instances of it are made from here.

use super::bindings::{wit_package, PluginExportIndices, WIT_VERSION};
use super::instance::{info_of, Instance};
use super::state::{LayerEnv, StoreData};
use crate::api::LayerInfo;
use std::sync::Arc;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{bail, format_err, Engine, Result, Store, Trap, UpdateDeadline};

/// Whether a component serves as the plugin or as a filter above it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Plugin,
    Filter,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Plugin => "plugin",
            Role::Filter => "filter",
        }
    }
}

/// A loaded component.
pub struct LayerComponent {
    /// What the user named: a built-in name or a path.
    pub source: String,
    pub role: Role,
    pub info: LayerInfo,
    /// The package version the component was built against (`0.2.0`).
    pub wit_version: String,
    pre: InstancePre<StoreData>,
    indices: PluginExportIndices,
}

/// The `0.MINOR.PATCH` a component's `plugin` export names, if it is an nbdbox component.
fn exported_version(engine: &Engine, component: &Component) -> Option<(String, Option<(u32, u32)>)> {
    component.component_type().exports(engine).find_map(|(name, _)| {
        let version = name.strip_prefix("nbdbox:plugin/plugin@")?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
        let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(0)), Some(Some(minor)), Some(Some(patch)), None) => Some((minor, patch)),
            _ => None,
        };
        Some((version.to_owned(), parsed))
    })
}

/// wit/VERSIONING.md: serve `0.MINOR.p` with the host's minor and `p` up to the host's patch.
fn check_version(engine: &Engine, component: &Component, source: &str) -> Result<String> {
    let host = wit_package();
    let Some((version, parsed)) = exported_version(engine, component) else {
        let exported: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        bail!(
            "'{source}' is not an nbdbox component: it does not export nbdbox:plugin/plugin (it exports: {})",
            exported.join(", ")
        );
    };
    match parsed {
        Some((minor, patch)) if minor == WIT_VERSION.0 && patch <= WIT_VERSION.1 => Ok(version),
        Some((minor, _)) if minor == WIT_VERSION.0 => bail!(
            "'{source}' was built for nbdbox:plugin@{version}, newer than this nbdbox's {host}; upgrade nbdbox or rebuild it against {host}"
        ),
        _ => bail!(
            "'{source}' was built for nbdbox:plugin@{version}, but this nbdbox serves {host}; rebuild it against the WIT of this nbdbox"
        ),
    }
}

impl LayerComponent {
    /// Compile (or load from cache), check, link and describe a component. `probe` is the
    /// environment the describing instance runs in (no grants, no layer below).
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<StoreData>,
        component: Component,
        source: &str,
        role: Role,
        probe: Arc<LayerEnv>,
    ) -> Result<LayerComponent> {
        let wit_version = check_version(engine, &component, source)?;
        let imports_next = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name.starts_with("nbdbox:plugin/plugin@"));
        match (role, imports_next) {
            (Role::Plugin, true) => bail!("'{source}' is a filter (it imports a next layer): use --filter={source}"),
            (Role::Filter, false) => bail!("'{source}' is a plugin, not a filter"),
            _ => {}
        }
        // Filters get no network: the data they see is the client's and the plugin's.
        let network = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .find(|name| name.starts_with("nbdbox:plugin/http@") || name.starts_with("nbdbox:plugin/streams@"));
        if let (Role::Filter, Some(name)) = (role, network) {
            bail!("'{source}' is a filter that imports {name}: filters get no network");
        }
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| format_err!("cannot load {} '{source}': {e:#}", role.name()))?;
        let indices = PluginExportIndices::new(&pre)?;
        let described = instantiate(&pre, &indices, source, probe)?
            .describe()
            .map_err(|e| format_err!("{source}: describe: {e}"))?;
        let info = info_of(described).map_err(|why| format_err!("cannot load {} '{source}': {why}", role.name()))?;
        let network_key = info.config_keys.iter().find(|k| k.kind.is_network());
        if let (Role::Filter, Some(key)) = (role, network_key) {
            bail!(
                "'{source}' is a filter with a config key of kind {} ({}): filters get no network",
                key.kind.name(),
                key.name
            );
        }
        Ok(LayerComponent {
            source: source.to_owned(),
            role,
            info,
            wit_version,
            pre,
            indices,
        })
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// A fresh instance in its own store, living in `env`.
    pub fn instantiate(&self, env: Arc<LayerEnv>) -> Result<Instance> {
        instantiate(&self.pre, &self.indices, &self.source, env)
    }
}

fn instantiate(
    pre: &InstancePre<StoreData>,
    indices: &PluginExportIndices,
    source: &str,
    env: Arc<LayerEnv>,
) -> Result<Instance> {
    let mut store = Store::new(pre.engine(), StoreData::new(env));
    store.limiter(|data| data);
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut();
        data.cut_off = data.deadline_passed();
        match data.cut_off {
            Some(_) => Err(Trap::Interrupt.into()),
            None => Ok(UpdateDeadline::Continue(super::instance::CHECK_TICKS)),
        }
    });
    // Instantiation runs the component's start code: under the deadline too.
    Instance::start_clock(&mut store);
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| format_err!("instantiating '{source}': {e:#}"))?;
    let exports = indices.load(&mut store, &instance)?;
    Ok(Instance::new(store, exports))
}
