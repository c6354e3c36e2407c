//! What nbdbox says about itself: `--dump-config`, `--dump-plugin`, and the layers' `--help`.

use crate::backend::Export;
use crate::runtime::{self, LayerComponent, Role};

/// The nbdkit release whose command line and behaviour nbdbox provides: what
/// nbdkit-probing(1) scripts gate on (`version_major`, `version_minor`). Features of later
/// releases that nbdbox has show as their own `--dump-config` keys and options, the way
/// nbdkit lets scripts probe for them; nbdbox's own version is the "extra" part nbdkit
/// prints for vendor builds.
const NBDKIT_VERSION: (u32, u32, u32) = (1, 32, 5);

fn nbdkit_version() -> String {
    let (major, minor, micro) = NBDKIT_VERSION;
    format!("{major}.{minor}.{micro}")
}

fn nbdbox_version() -> String {
    format!("nbdbox {}", env!("CARGO_PKG_VERSION"))
}

/// `--version`: nbdkit's line for a vendor build (`nbdkit 1.32.5 (nbdbox 0.1.0)`), then with
/// a plugin one line per layer, outermost first, as nbdkit's server/main.c.
pub fn print_version(layers: &[&LayerComponent]) {
    println!("nbdkit {} ({})", nbdkit_version(), nbdbox_version());
    for layer in layers {
        let info = &layer.info;
        if info.version.is_empty() {
            println!("{}", info.name);
        } else {
            println!("{} {}", info.name, info.version);
        }
    }
}

/// `--dump-config`: nbdkit's keys with nbdbox's values, sorted as nbdkit prints them, and
/// nbdbox's own (`plugins`, `filters`, `wit`). Built-in components live inside the binary, so
/// `plugindir` and `filterdir` are empty.
pub fn print_config() {
    let exe = std::env::current_exe().ok();
    let binary = exe.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let bindir = exe
        .as_ref()
        .and_then(|p| p.parent())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let yes_no = |on: bool| if on { "yes" } else { "no" };
    let (major, minor, _) = NBDKIT_VERSION;
    let lines = [
        ("binary", binary),
        ("bindir", bindir),
        ("exit_with_parent", yes_no(cfg!(target_os = "linux")).into()),
        ("filterdir", String::new()),
        ("filters", runtime::FILTER_NAMES.join(",")),
        ("host_cpu", std::env::consts::ARCH.into()),
        ("host_os", std::env::consts::OS.into()),
        ("name", "nbdbox".into()),
        ("nbdbox_version", env!("CARGO_PKG_VERSION").into()),
        ("plugindir", String::new()),
        ("plugins", runtime::PLUGIN_NAMES.join(",")),
        ("run_default_socket", "Unix".into()),
        ("selinux", "no".into()),
        ("timeout_option", "yes".into()),
        ("tls", "yes".into()),
        ("version", nbdkit_version()),
        ("version_extra", nbdbox_version()),
        ("version_major", major.to_string()),
        ("version_minor", minor.to_string()),
        ("vsock_option", "no".into()),
        ("wit", runtime::bindings::wit_package()),
    ];
    for (key, value) in lines {
        println!("{key}={value}");
    }
}

/// `--short-options` / `--long-options`: every option name, one a line, for bash completion.
pub fn print_option_names(long: bool) {
    for name in crate::cli::option_names(long) {
        println!("{name}");
    }
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
