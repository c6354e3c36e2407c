//! `--dump-config-toml`: the config file equivalent to a [`Config`], so that a command line
//! someone already runs becomes a file to start from. Which layer takes each parameter,
//! and whether it is a grant, comes from the loaded layers' declarations, exactly as the
//! command line's parameters travel down the stack: the outermost layer that declares a key
//! takes it, and the plugin what none declares.

use super::is_path;
use crate::api::LayerInfo;
use crate::config::{config_pairs, Config, ConfigError, ExportConfig, Listen, ServerOptions, TlsMode, UnixSocket};
use crate::runtime::budget::MemoryBudget;
use crate::runtime::sha256_hex;
use std::fmt::Write as _;
use std::path::Path;

/// An export with its loaded layers, whose declarations say whose each key is.
pub struct Stack<'a> {
    pub export: &'a ExportConfig,
    /// Outermost first.
    pub filters: Vec<&'a LayerInfo>,
    pub plugin: &'a LayerInfo,
}

/// The file for `config`, whose exports are `stacks`. What only a command line says (how
/// the process runs, `-U -`, `-s`, `-e`) is left out.
pub fn print(config: &Config, stacks: &[Stack<'_>]) -> Result<String, ConfigError> {
    let defaults = crate::cli::defaults();
    let mut out = String::new();
    if let Some(name) = &config.default_export {
        line(&mut out, format_args!("default-export = {}", string(name)));
    }
    let listen = match &config.listen {
        Listen::Unix(UnixSocket::Path(path)) => vec![("unix", string(&absolute(path)?))],
        Listen::Tcp { ipaddr, port } => {
            let port = port
                .as_deref()
                .map(|port| {
                    port.parse::<u16>()
                        .map_err(|_| ConfigError(format!("-p: '{port}' is not a port number")))
                })
                .transpose()?;
            let mut entries = Vec::new();
            entries.extend(ipaddr.as_deref().map(|address| ("address", string(address))));
            entries.extend(port.map(|port| ("port", port.to_string())));
            entries
        }
        Listen::Unix(UnixSocket::Private) | Listen::Stdio => Vec::new(),
    };
    section(&mut out, "[listen]", &listen);
    // Every server option, named: one added to `ServerOptions` must be printed too.
    let ServerOptions {
        no_structured_replies,
        handshake_mask,
        threads,
        max_connections,
        tls,
        handshake_timeout,
        keepalive,
        no_meta_contexts,
        oldstyle,
    } = &config.server;
    let unset = &defaults.server;
    let mut settings = Vec::new();
    let mut set = |changed: bool, key: &'static str, value: String| {
        if changed {
            settings.push((key, value));
        }
    };
    set(*threads != unset.threads, "threads", threads.to_string());
    set(
        *max_connections != unset.max_connections,
        "max-connections",
        max_connections.to_string(),
    );
    set(
        config.memory_budget != MemoryBudget::default_total(),
        "memory-budget",
        string(&size(config.memory_budget)),
    );
    set(*no_structured_replies, "structured-replies", "false".to_owned());
    set(
        *handshake_mask != unset.handshake_mask,
        "mask-handshake",
        handshake_mask.to_string(),
    );
    if let Some(timeout) = handshake_timeout {
        set(true, "handshake-timeout", timeout.as_secs_f64().to_string());
    }
    set(*keepalive, "keepalive", "true".to_owned());
    set(*no_meta_contexts, "meta-contexts", "false".to_owned());
    set(*oldstyle, "oldstyle", "true".to_owned());
    section(&mut out, "[server]", &settings);
    let mut settings = Vec::new();
    settings.extend(tls.mode.map(|mode| {
        let mode = match mode {
            TlsMode::Off => "off",
            TlsMode::On => "on",
            TlsMode::Require => "require",
        };
        ("mode", string(mode))
    }));
    for (key, path) in [("certificates", &tls.certificates), ("psk", &tls.psk)] {
        if let Some(path) = path {
            settings.push((key, string(&absolute(path)?)));
        }
    }
    if tls.verify_peer {
        settings.push(("verify-peer", "true".to_owned()));
    }
    section(&mut out, "[tls]", &settings);
    let default_limits = defaults.exports[0].limits;
    for stack in stacks {
        print_export(&mut out, stack, default_limits)?;
    }
    Ok(out)
}

fn print_export(out: &mut String, stack: &Stack<'_>, defaults: crate::runtime::Limits) -> Result<(), ConfigError> {
    // Every field, named: one added to `ExportConfig` must be printed too (`written` only
    // says where a file put the others).
    let ExportConfig {
        name,
        description,
        plugin,
        filters,
        params,
        readonly,
        limits,
        pins,
        written: _,
    } = stack.export;
    let mut entries = match name {
        Some(name) => vec![("name", string(name))],
        None => vec![("any-name", "true".to_owned())],
    };
    entries.extend(description.as_deref().map(|text| ("description", string(text))));
    if *readonly {
        entries.push(("readonly", "true".to_owned()));
    }
    if limits.memory != defaults.memory {
        entries.push(("memory-limit", string(&size(limits.memory))));
    }
    if limits.call_timeout != defaults.call_timeout {
        entries.push(("call-timeout", limits.call_timeout.as_secs_f64().to_string()));
    }
    section(out, "[[export]]", &entries);

    let layers: Vec<&LayerInfo> = stack.filters.iter().copied().chain([stack.plugin]).collect();
    let mut tables: Vec<LayerTables> = layers.iter().map(|_| LayerTables::default()).collect();
    let pairs = config_pairs(params, stack.plugin.magic_config_key.as_deref())?;
    let plugin_index = layers.len() - 1;
    for (key, value) in pairs {
        let (owner, kind) = layers
            .iter()
            .enumerate()
            .find_map(|(i, layer)| Some((i, Some(layer.key(&key)?.kind))))
            .unwrap_or((plugin_index, None));
        let value = match kind {
            Some(kind) if is_path(kind) && !value.is_empty() => absolute(Path::new(&value))?,
            _ => value,
        };
        tables[owner].add(&key, value, kind.is_some_and(|kind| kind.is_grant()))?;
    }
    let specs = filters.iter().chain(plugin);
    for (index, (spec, tables)) in specs.zip(tables).enumerate() {
        let header = if index == stack.filters.len() {
            "[export.plugin]"
        } else {
            "[[export.filter]]"
        };
        // As the command line tells a path from a built-in's name.
        let mut entries = if spec.contains(['/', '.']) {
            vec![("path", string(&absolute(Path::new(spec))?))]
        } else {
            vec![("name", string(spec))]
        };
        if let Some(pin) = pins.iter().find(|pin| &pin.component == spec) {
            entries.push(("sha256", string(&sha256_hex(&pin.sha256))));
        }
        for (key, settings) in [("grants", &tables.grants), ("params", &tables.params)] {
            if !settings.is_empty() {
                entries.push((key, inline_table(settings)));
            }
        }
        section(out, header, &entries);
    }
    Ok(())
}

/// One layer's grants and parameters, each key with its values in order.
#[derive(Default)]
struct LayerTables {
    grants: Vec<(String, Vec<String>)>,
    params: Vec<(String, Vec<String>)>,
    /// Every key given so far, to tell a repeat that a table cannot order.
    order: Vec<String>,
}

impl LayerTables {
    fn add(&mut self, key: &str, value: String, grant: bool) -> Result<(), ConfigError> {
        let table = if grant { &mut self.grants } else { &mut self.params };
        match table.iter_mut().find(|(k, _)| k == key) {
            // A table gathers a key's values: fine while nothing came in between.
            Some((_, values)) if self.order.last().map(String::as_str) == Some(key) => values.push(value),
            Some(_) => {
                return Err(ConfigError(format!(
                    "{key} is given again after other keys: a config file's table cannot keep that order"
                )))
            }
            None => table.push((key.to_owned(), vec![value])),
        }
        self.order.push(key.to_owned());
        Ok(())
    }
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    let _ = writeln!(out, "{args}");
}

/// A table header and its entries, after a blank line; nothing when there are none (an
/// export's header is always printed).
fn section(out: &mut String, header: &str, entries: &[(&str, String)]) {
    if entries.is_empty() && header != "[[export]]" {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    line(out, format_args!("{header}"));
    for (key, value) in entries {
        line(out, format_args!("{key} = {value}"));
    }
}

fn inline_table(settings: &[(String, Vec<String>)]) -> String {
    let entries: Vec<String> = settings
        .iter()
        .map(|(key, values)| {
            let value = match &values[..] {
                [one] => string(one),
                many => format!("[{}]", many.iter().map(|v| string(v)).collect::<Vec<_>>().join(", ")),
            };
            format!("{} = {value}", bare_or_quoted(key))
        })
        .collect();
    format!("{{ {} }}", entries.join(", "))
}

/// A TOML string literal.
fn string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A key as TOML writes it: bare when it can be (a `.` would make it dotted).
fn bare_or_quoted(key: &str) -> String {
    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        key.to_owned()
    } else {
        string(key)
    }
}

/// A path as the file needs it: a relative one would be taken from the file's directory.
fn absolute(path: &Path) -> Result<String, ConfigError> {
    let absolute = std::path::absolute(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    absolute
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| ConfigError(format!("{}: a config file holds UTF-8 paths only", absolute.display())))
}

/// Bytes in nbdkit's size syntax, with the largest suffix that is exact.
fn size(bytes: u64) -> String {
    for (shift, suffix) in [(60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::Fixed;
    use super::*;
    use crate::api::{ConfigKey, ConfigKind, ThreadModel};
    use crate::cli::Cli;
    use clap::Parser;

    fn info(name: &str, magic: Option<&str>, keys: &[(&str, ConfigKind)]) -> LayerInfo {
        LayerInfo {
            name: name.to_owned(),
            version: String::new(),
            description: String::new(),
            magic_config_key: magic.map(str::to_owned),
            config_keys: keys
                .iter()
                .map(|&(key, kind)| ConfigKey {
                    name: key.to_owned(),
                    kind,
                    help: String::new(),
                })
                .collect(),
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    /// What a printed file sets besides its exports.
    fn fixed_of(text: &str) -> Fixed {
        super::super::parse(text, Path::new("/x.toml"), crate::cli::defaults().exports[0].limits)
            .unwrap()
            .fixed
    }

    fn printed(args: &[&str], filters: Vec<&LayerInfo>, plugin: &LayerInfo) -> Result<String, String> {
        let config = Cli::try_parse_from(args).unwrap().into_config().unwrap();
        let stack = Stack {
            export: &config.exports[0],
            filters,
            plugin,
        };
        print(&config, &[stack]).map_err(|e| e.to_string())
    }

    #[test]
    fn each_key_goes_to_the_layer_that_takes_it() {
        let retry = info("retry", None, &[("retries", ConfigKind::Text)]);
        let log = info("log", None, &[("logfile", ConfigKind::OutputFile)]);
        let file = info(
            "file",
            Some("file"),
            &[
                ("file", ConfigKind::File),
                ("cache", ConfigKind::Text),
                ("retries", ConfigKind::Text),
            ],
        );
        let args = [
            "nbdbox",
            "-r",
            "-t",
            "4",
            "--memory-limit=256M",
            "--call-timeout=2.5",
            "-U",
            "/run/s",
            "--filter=retry",
            "--filter=log",
            "file",
            "/d.img",
            "retries=3",
            "logfile=/l",
            "cache=none",
        ];
        let text = printed(&args, vec![&retry, &log], &file).unwrap();
        assert_eq!(
            text,
            r#"[listen]
unix = "/run/s"

[server]
threads = 4

[[export]]
any-name = true
readonly = true
memory-limit = "256M"
call-timeout = 2.5

[[export.filter]]
name = "retry"
params = { retries = "3" }

[[export.filter]]
name = "log"
grants = { logfile = "/l" }

[export.plugin]
name = "file"
grants = { file = "/d.img" }
params = { cache = "none" }
"#
        );
        assert_eq!(
            fixed_of(&text),
            Fixed {
                listen: Some(Listen::Unix(UnixSocket::Path("/run/s".into()))),
                threads: Some(4),
                ..Fixed::default()
            }
        );
    }

    #[test]
    fn what_a_table_cannot_say_is_refused() {
        let plugin = info("p", None, &[("a", ConfigKind::Text), ("b", ConfigKind::Text)]);
        let repeated = printed(&["nbdbox", "./p.wasm", "a=1", "a=2", "b=3"], vec![], &plugin).unwrap();
        assert!(
            repeated.contains("params = { a = [\"1\", \"2\"], b = \"3\" }"),
            "{repeated}"
        );
        assert!(repeated.contains(&format!("path = {}", string(&absolute(Path::new("./p.wasm")).unwrap()))));
        let interleaved = printed(&["nbdbox", "./p.wasm", "a=1", "b=3", "a=2"], vec![], &plugin).unwrap_err();
        assert!(
            interleaved.contains("a is given again after other keys"),
            "{interleaved}"
        );
        // What no layer declares is the plugin's to take or refuse.
        let undeclared = printed(&["nbdbox", "./p.wasm", "c=1"], vec![], &plugin).unwrap();
        assert!(undeclared.contains("params = { c = \"1\" }"), "{undeclared}");
    }

    #[test]
    fn sizes_take_the_largest_exact_suffix() {
        assert_eq!(size(2 << 30), "2G");
        assert_eq!(size(1536 << 20), "1536M");
        assert_eq!(size(1000), "1000");
        assert_eq!(size(0), "0");
    }
}
