//! What nbdbox says about itself: `--dump-config`, `--dump-plugin`, and the layers' `--help`.

use crate::backend::Export;
use crate::runtime::{self, LayerComponent, Role};

pub fn print_config() {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (major, minor) = (env!("CARGO_PKG_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MINOR"));
    println!(
        "binary={exe}\nexit_with_parent={}\nfilters={}\nhost_cpu={}\nhost_os={}\nname=nbdbox\nplugins={}\ntls=no\nversion={}\nversion_major={major}\nversion_minor={minor}\nwit={}",
        if cfg!(target_os = "linux") { "yes" } else { "no" },
        runtime::FILTER_NAMES.join(","),
        std::env::consts::ARCH,
        std::env::consts::OS,
        runtime::PLUGIN_NAMES.join(","),
        env!("CARGO_PKG_VERSION"),
        runtime::bindings::wit_package()
    );
}

/// nbdkit's --dump-plugin: the plugin's fields, with the thread model of the whole stack.
pub fn print_plugin_dump(export: &Export) {
    let plugin = &export.plugin().component;
    let info = &plugin.info;
    let path = std::fs::canonicalize(&plugin.source)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| plugin.source.clone());
    println!("path={path}\nname={}", info.name);
    if !info.version.is_empty() {
        println!("version={}", info.version);
    }
    println!("wit=nbdbox:plugin@{}", plugin.wit_version);
    println!(
        "max_thread_model={}\nthread_model={}",
        info.thread_model.name(),
        export.thread_model().name()
    );
    if let Some(key) = &info.magic_config_key {
        println!("magic_config_key={key}");
    }
    println!("shared_state={}", if info.shared_state { "yes" } else { "no" });
    for key in &info.config_keys {
        println!("config_key={}:{}", key.name, key.kind.name());
    }
}

pub fn print_layer_help(layer: &LayerComponent) {
    let info = &layer.info;
    let role = if layer.role == Role::Filter { "filter" } else { "plugin" };
    println!("\n{role}: {} ({})\n{}", info.name, layer.source, info.description);
    for key in &info.config_keys {
        let magic = if info.magic_config_key.as_deref() == Some(key.name.as_str()) {
            " (magic: may be given bare)"
        } else {
            ""
        };
        println!("{}=<{}>{magic}\n    {}", key.name, key.kind.name(), key.help);
    }
}
