//! The configuration file (`--config FILE`): the exports one process serves at once, each
//! with its own plugin, filters, grants and limits, in TOML. It builds the same [`Config`]
//! as the command line, and [`print`] turns any `Config` back into a file
//! (`--dump-config-toml`).
//!
//! ```toml
//! default-export = "scratch"       # what a client asking for "" gets
//!
//! [listen]                         # or -U / -p / -i on the command line
//! unix = "/run/nbdbox.sock"        # or: address = "127.0.0.1", port = 10809
//!
//! [server]                         # threads, max-connections, memory-budget,
//! max-connections = 64             # structured-replies, mask-handshake, meta-contexts,
//!                                  # handshake-timeout (seconds), keepalive, oldstyle
//!
//! [tls]                            # or --tls... on the command line
//! mode = "require"                 # off, on, require
//! certificates = "pki"             # or psk = "keys.psk"; verify-peer = true
//!
//! [[export]]
//! name = "scratch"
//! description = "256 MiB of RAM"
//! memory-limit = "512M"            # and call-timeout (seconds), readonly
//! plugin = { name = "memory", params = { size = "256M" } }
//!
//! [[export]]
//! name = "disk"
//! readonly = true
//! [export.plugin]
//! path = "plugins/disk.wasm"       # relative to this file
//! sha256 = "9f86d0…"               # a file whose digest differs is refused
//! grants = { file = "disk.img" }   # nothing is granted but what is written here
//! [[export.filter]]                # outermost first
//! name = "retry"
//! params = { retries = 3 }
//! ```
//!
//! Each layer's `params` and `grants` are its own: once the components are loaded,
//! [`settle`] refuses a key a filter does not declare (a plugin refuses for itself the keys
//! it does not take), one a layer above would take first, a grant written under `params`
//! and the reverse, naming the line. Relative paths (the component files, path grants, the
//! Unix socket, TLS files) are taken from the file's directory.

pub mod print;

use super::{is_key, Config, ConfigError, ExportConfig, Listen, Param, TlsSettings, UnixSocket};
use crate::api::{ConfigKind, LayerInfo};
use crate::backend::rules::{export_name_fault, MAX_EXPORTS};
use crate::protocol::consts::MAX_STRING;
use crate::runtime::Limits;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A component file's required sha256: a file whose digest differs is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The plugin or filter as [`ExportConfig`] names it.
    pub component: String,
    pub sha256: [u8; 32],
}

/// Where a config file wrote an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub file: PathBuf,
    /// The line of its `[[export]]`.
    pub line: usize,
    /// Where each of the export's `params` was written, in the same order.
    pub params: Vec<WrittenParam>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrittenParam {
    /// Whose table: the filters outermost first, then the plugin.
    pub layer: usize,
    /// Written under `grants` rather than `params`.
    pub grant: bool,
    pub line: usize,
}

/// What a file sets besides its exports, fixed for the life of the process: a reload that
/// changes it is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fixed {
    pub listen: Option<Listen>,
    pub tls: Option<TlsSettings>,
    pub threads: Option<usize>,
    pub max_connections: Option<usize>,
    pub memory_budget: Option<u64>,
    pub structured_replies: Option<bool>,
    pub mask_handshake: Option<u16>,
    pub handshake_timeout: Option<Duration>,
    pub keepalive: Option<bool>,
    pub meta_contexts: Option<bool>,
    pub oldstyle: Option<bool>,
}

/// `--config FILE` as the server started with it.
#[derive(Clone, Debug)]
pub struct Source {
    /// Absolute: reloads happen after daemonizing moved to `/`.
    pub path: PathBuf,
    pub fixed: Fixed,
    /// The limits of an export that sets none (the command line's defaults).
    pub limits: Limits,
}

/// One reading of the file.
#[derive(Debug)]
pub struct FileConfig {
    pub fixed: Fixed,
    pub exports: Vec<ExportConfig>,
    pub default_export: Option<String>,
}

/// Build `config`'s exports and settings from the file at `path`. `file_options`, given on
/// the command line, are the file's to set and are refused; so are `either_options` (where
/// to listen, TLS) when the file has a `[listen]` or `[tls]` too.
pub fn apply(
    path: &Path,
    config: &mut Config,
    file_options: &[&str],
    either_options: &[&str],
) -> Result<(), ConfigError> {
    if !file_options.is_empty() {
        return Err(ConfigError(format!(
            "--config: {} cannot be given with a config file: the file says what to serve",
            file_options.join(", ")
        )));
    }
    let path = std::path::absolute(path).map_err(|e| ConfigError(format!("--config: {}: {e}", path.display())))?;
    let limits = config.exports[0].limits;
    let file = read(&path, limits)?;
    let fixed = &file.fixed;
    let (tls_options, listen_options): (Vec<&str>, Vec<&str>) =
        either_options.iter().partition(|option| option.starts_with("--tls"));
    let both = |options: &[&str], section: &str| {
        ConfigError(format!(
            "--config: {} and the file's [{section}] cannot both be given",
            options.join(", ")
        ))
    };
    if let Some(listen) = &fixed.listen {
        if !listen_options.is_empty() {
            return Err(both(&listen_options, "listen"));
        }
        config.listen = listen.clone();
    }
    if let Some(tls) = &fixed.tls {
        if !tls_options.is_empty() {
            return Err(both(&tls_options, "tls"));
        }
        config.server.tls = tls.clone();
    }
    let server = &mut config.server;
    server.threads = fixed.threads.unwrap_or(server.threads);
    server.max_connections = fixed.max_connections.unwrap_or(server.max_connections);
    server.no_structured_replies = fixed.structured_replies.map_or(server.no_structured_replies, |on| !on);
    server.handshake_mask = fixed.mask_handshake.unwrap_or(server.handshake_mask);
    server.handshake_timeout = fixed.handshake_timeout.or(server.handshake_timeout);
    server.keepalive = fixed.keepalive.unwrap_or(server.keepalive);
    server.no_meta_contexts = fixed.meta_contexts.map_or(server.no_meta_contexts, |on| !on);
    server.oldstyle = fixed.oldstyle.unwrap_or(server.oldstyle);
    config.memory_budget = fixed.memory_budget.unwrap_or(config.memory_budget);
    check_limits(&file.exports, config.memory_budget)?;
    config.exports = file.exports;
    config.default_export = file.default_export;
    config.config_file = Some(Source {
        path,
        fixed: file.fixed,
        limits,
    });
    Ok(())
}

/// Read the file at `path`; `limits` are those of an export that sets none.
pub fn read(path: &Path, limits: Limits) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config: cannot read {}: {e}", path.display())))?;
    parse(&text, path, limits)
}

/// Refuse an export whose memory limit exceeds the budget: no instance of it could start.
pub fn check_limits(exports: &[ExportConfig], budget: u64) -> Result<(), ConfigError> {
    match exports.iter().find(|export| export.limits.memory > budget) {
        Some(export) => Err(ConfigError(format!(
            "{}: memory-limit ({} bytes) is larger than the memory budget ({budget} bytes): no instance could start",
            origin(export).unwrap_or_default(),
            export.limits.memory
        ))),
        None => Ok(()),
    }
}

/// Where messages about `export` point: `FILE:LINE: export 'NAME'`; None for the command
/// line's export.
pub fn origin(export: &ExportConfig) -> Option<String> {
    let written = export.written.as_ref()?;
    Some(format!(
        "{}:{}: {}",
        written.file.display(),
        written.line,
        label(export.name.as_deref())
    ))
}

/// Like [`origin`], at the line of the parameter that `message` is about, when it starts
/// with `KEY=VALUE:` as the backend's messages about a parameter do.
pub fn origin_of(export: &ExportConfig, message: &str) -> Option<String> {
    let written = export.written.as_ref()?;
    let line = export
        .params
        .iter()
        .zip(&written.params)
        .find(|(param, _)| matches!(param, Param::Pair(key, value) if message.starts_with(&format!("{key}={value}:"))))
        .map_or(written.line, |(_, place)| place.line);
    Some(format!(
        "{}:{line}: {}",
        written.file.display(),
        label(export.name.as_deref())
    ))
}

fn label(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("export '{name}'"),
        None => "the any-name export".to_owned(),
    }
}

/// Grant kinds whose value is a path, taken from the file's directory when relative.
fn is_path(kind: ConfigKind) -> bool {
    matches!(
        kind,
        ConfigKind::File
            | ConfigKind::OutputFile
            | ConfigKind::Directory
            | ConfigKind::TriggerFile
            | ConfigKind::UnixSocket
    )
}

/// Check what the file wrote for `export` against what its loaded layers declare
/// (`layers`: the filters outermost first, then the plugin), and take relative path grants
/// from the file's directory. The command line's export passes as it is.
pub fn settle(export: &mut ExportConfig, layers: &[&LayerInfo]) -> Result<(), ConfigError> {
    let Some(written) = &export.written else {
        return Ok(());
    };
    let dir = written.file.parent().unwrap_or(Path::new("/"));
    let plugin_index = layers.len() - 1;
    for (param, place) in export.params.iter_mut().zip(&written.params) {
        let Param::Pair(key, value) = param else {
            continue;
        };
        let at = |message: String| ConfigError(format!("{}:{}: {message}", written.file.display(), place.line));
        let layer = layers[place.layer];
        let role = if place.layer == plugin_index {
            "plugin"
        } else {
            "filter"
        };
        if let Some(above) = layers[..place.layer].iter().find(|above| above.key(key).is_some()) {
            return Err(at(format!(
                "filter '{}', above {role} '{}', takes '{key}' first: write it under that filter",
                above.name, layer.name
            )));
        }
        let Some(declared) = layer.key(key) else {
            // A plugin may take keys it does not declare (nbdkit's data plugin: any key is a
            // $VAR), and refuses the others itself; a filter passes them down.
            if role == "plugin" && !place.grant {
                continue;
            }
            let known: Vec<&str> = layer.config_keys.iter().map(|k| k.name.as_str()).collect();
            let known = match known.is_empty() {
                true => "it takes none".to_owned(),
                false => format!("its parameters: {}", known.join(", ")),
            };
            return Err(at(format!(
                "{role} '{}' has no parameter '{key}' ({known})",
                layer.name
            )));
        };
        let kind = declared.kind.name();
        match (declared.kind.is_grant(), place.grant) {
            (true, false) => {
                return Err(at(format!(
                    "'{key}' of {role} '{}' is a grant ({kind}): write it under grants",
                    layer.name
                )))
            }
            (false, true) => {
                return Err(at(format!(
                    "'{key}' of {role} '{}' is a {kind} parameter, not a grant: write it under params",
                    layer.name
                )))
            }
            _ => {}
        }
        if is_path(declared.kind) && !value.is_empty() {
            *value = dir.join(&*value).to_string_lossy().into_owned();
        }
    }
    Ok(())
}

// ---- the schema, as serde reads it (unknown keys are refused with their line) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Document {
    default_export: Option<Spanned<String>>,
    listen: Option<Spanned<ListenTable>>,
    #[serde(default)]
    server: ServerTable,
    tls: Option<TlsTable>,
    #[serde(default)]
    export: Vec<Spanned<ExportTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenTable {
    unix: Option<String>,
    address: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TlsTable {
    mode: Option<Spanned<String>>,
    certificates: Option<String>,
    psk: Option<String>,
    #[serde(default)]
    verify_peer: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServerTable {
    threads: Option<usize>,
    max_connections: Option<usize>,
    memory_budget: Option<Size>,
    structured_replies: Option<bool>,
    mask_handshake: Option<u16>,
    handshake_timeout: Option<Spanned<f64>>,
    keepalive: Option<bool>,
    meta_contexts: Option<bool>,
    oldstyle: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ExportTable {
    name: Option<Spanned<String>>,
    #[serde(default)]
    any_name: bool,
    description: Option<Spanned<String>>,
    #[serde(default)]
    readonly: bool,
    memory_limit: Option<Size>,
    call_timeout: Option<Spanned<f64>>,
    plugin: Option<Spanned<LayerTable>>,
    #[serde(default)]
    filter: Vec<Spanned<LayerTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerTable {
    name: Option<String>,
    path: Option<String>,
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    grants: Settings,
    #[serde(default)]
    params: Settings,
}

/// A size: an integer, or a string in nbdkit's syntax (`"1G"`).
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes, or a string such as \"1G\"")
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<Size, E> {
                Ok(Size(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<Size, E> {
                u64::try_from(bytes)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Size, E> {
                crate::parse::parse_size(text).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A layer's `params` or `grants`: key = value in the file's order, an array giving the key
/// once per element (as a key repeated on the command line).
#[derive(Default)]
struct Settings(Vec<(Spanned<String>, Vec<String>)>);

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Settings, D::Error> {
        struct SettingsVisitor;
        impl<'de> Visitor<'de> for SettingsVisitor {
            type Value = Settings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of key = value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Settings, A::Error> {
                let mut settings = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let Values(values) = map.next_value()?;
                    settings.push((key, values));
                }
                Ok(Settings(settings))
            }
        }
        deserializer.deserialize_map(SettingsVisitor)
    }
}

/// One value as the command line would give it (a string, number or boolean), or an
/// array of them.
struct Values(Vec<String>);

/// One value: a string, number or boolean, as text.
struct Scalar(String);

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_owned())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<String, E> {
        Ok(n.to_string())
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<String, E> {
        Ok(n.to_string())
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<String, E> {
        Ok(x.to_string())
    }
    fn visit_bool<E: de::Error>(self, on: bool) -> Result<String, E> {
        Ok(on.to_string())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        deserializer.deserialize_any(ScalarVisitor).map(Scalar)
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Values, D::Error> {
        struct ValuesVisitor;
        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean, or an array of them")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Values, E> {
                ScalarVisitor.visit_str(text).map(|v| Values(vec![v]))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Values, E> {
                ScalarVisitor.visit_i64(n).map(|v| Values(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Values, E> {
                ScalarVisitor.visit_u64(n).map(|v| Values(vec![v]))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Values, E> {
                ScalarVisitor.visit_f64(x).map(|v| Values(vec![v]))
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<Values, E> {
                ScalarVisitor.visit_bool(on).map(|v| Values(vec![v]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut values = Vec::new();
                while let Some(Scalar(value)) = seq.next_element()? {
                    values.push(value);
                }
                Ok(Values(values))
            }
        }
        deserializer.deserialize_any(ValuesVisitor)
    }
}

// ---- from the schema to `ExportConfig`s, each error at its line ----

/// What an export's layers add up to as they are read.
#[derive(Default)]
struct Stack {
    params: Vec<Param>,
    written: Vec<WrittenParam>,
    pins: Vec<Pin>,
}

/// The text being read, for messages that name a line.
struct Text<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Text<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn error(&self, span: Range<usize>, message: impl fmt::Display) -> ConfigError {
        ConfigError(format!("{}:{}: {message}", self.path.display(), self.line(span)))
    }

    fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        match error.span() {
            Some(span) => self.error(span, error.message()),
            None => ConfigError(format!("{}: {}", self.path.display(), error.message())),
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    fn listen(&self, table: Spanned<ListenTable>) -> Result<Listen, ConfigError> {
        let span = table.span();
        match table.into_inner() {
            ListenTable {
                unix: Some(path),
                address: None,
                port: None,
            } if path != "-" => Ok(Listen::Unix(UnixSocket::Path(self.dir().join(path)))),
            ListenTable { unix: Some(_), .. } => Err(self.error(
                span,
                "[listen]: unix = PATH alone (a private socket, -U -, is given on the command line)",
            )),
            ListenTable {
                address: None,
                port: None,
                ..
            } => Err(self.error(span, "[listen]: give unix = PATH, or address and port")),
            ListenTable { address, port, .. } => Ok(Listen::Tcp {
                ipaddr: address,
                port: port.map(|port| port.to_string()),
            }),
        }
    }

    fn tls(&self, table: TlsTable) -> Result<TlsSettings, ConfigError> {
        let mode = table
            .mode
            .map(|mode| {
                crate::cli::parse_tls_mode(mode.get_ref())
                    .map_err(|e| self.error(mode.span(), format!("[tls] mode: {e}")))
            })
            .transpose()?;
        Ok(TlsSettings {
            mode,
            certificates: table.certificates.map(|dir| self.dir().join(dir)),
            psk: table.psk.map(|file| self.dir().join(file)),
            verify_peer: table.verify_peer,
        })
    }

    fn export(
        &self,
        table: Spanned<ExportTable>,
        limits: Limits,
        earlier: &[ExportConfig],
    ) -> Result<ExportConfig, ConfigError> {
        let span = table.span();
        let line = self.line(span.clone());
        let table = table.into_inner();
        let name = match (table.name, table.any_name) {
            (Some(name), false) => {
                if let Some(fault) = export_name_fault(name.get_ref()) {
                    return Err(self.error(name.span(), format!("an export name cannot be {fault}")));
                }
                if let Some(twin) = earlier.iter().find(|e| e.name.as_ref() == Some(name.get_ref())) {
                    return Err(self.error(
                        name.span(),
                        format!(
                            "{} is already defined at line {}",
                            label(Some(name.get_ref())),
                            line_of(twin)
                        ),
                    ));
                }
                Some(name.into_inner())
            }
            (None, true) => {
                if let Some(twin) = earlier.iter().find(|e| e.name.is_none()) {
                    return Err(self.error(
                        span,
                        format!("an any-name export is already defined at line {}", line_of(twin)),
                    ));
                }
                None
            }
            (Some(name), true) => {
                return Err(self.error(name.span(), "an export has a name or any-name = true, not both"))
            }
            (None, false) => {
                return Err(self.error(
                    span,
                    "an export needs a name (or any-name = true: every name no other export has)",
                ))
            }
        };
        let what = label(name.as_deref());
        let description = match table.description {
            Some(text) if text.get_ref().len() > MAX_STRING || text.get_ref().contains('\0') => {
                return Err(self.error(
                    text.span(),
                    format!("{what}: a description is at most {MAX_STRING} bytes, without NUL"),
                ))
            }
            text => text.map(Spanned::into_inner),
        };
        let call_timeout = match table.call_timeout {
            None => limits.call_timeout,
            Some(seconds) => Duration::try_from_secs_f64(*seconds.get_ref())
                .ok()
                .filter(|timeout| !timeout.is_zero())
                .ok_or_else(|| {
                    self.error(
                        seconds.span(),
                        format!("{what}: call-timeout must be a positive number of seconds"),
                    )
                })?,
        };
        let Some(plugin) = table.plugin else {
            return Err(self.error(span, format!("{what} has no plugin")));
        };
        let mut stack = Stack::default();
        let filters = table
            .filter
            .into_iter()
            .enumerate()
            .map(|(index, filter)| self.layer(index, filter, "filter", &what, &mut stack))
            .collect::<Result<Vec<String>, ConfigError>>()?;
        let plugin = self.layer(filters.len(), plugin, "plugin", &what, &mut stack)?;
        Ok(ExportConfig {
            name,
            description,
            plugin: Some(plugin),
            filters,
            params: stack.params,
            readonly: table.readonly,
            limits: Limits {
                memory: table.memory_limit.map_or(limits.memory, |size| size.0),
                call_timeout,
            },
            pins: stack.pins,
            written: Some(Written {
                file: self.path.to_owned(),
                line,
                params: stack.written,
            }),
        })
    }

    /// One layer (the `index`th, outermost first): its component, with its pin, grants and
    /// parameters added to `stack`.
    fn layer(
        &self,
        index: usize,
        layer: Spanned<LayerTable>,
        role: &str,
        what: &str,
        stack: &mut Stack,
    ) -> Result<String, ConfigError> {
        let span = layer.span();
        let layer = layer.into_inner();
        let component = self.component(span, &layer, what, role)?;
        if let Some(digest) = &layer.sha256 {
            let sha256 = parse_sha256(digest.get_ref())
                .ok_or_else(|| self.error(digest.span(), format!("{what}: sha256 must be 64 hexadecimal digits")))?;
            if stack
                .pins
                .iter()
                .any(|pin| pin.component == component && pin.sha256 != sha256)
            {
                return Err(self.error(digest.span(), format!("{what}: {component} is pinned to two digests")));
            }
            stack.pins.push(Pin {
                component: component.clone(),
                sha256,
            });
        }
        for (settings, grant) in [(layer.grants, true), (layer.params, false)] {
            for (key, values) in settings.0 {
                if !is_key(key.get_ref()) {
                    return Err(self.error(
                        key.span(),
                        format!(
                            "{what}: '{}' is not a parameter name ([A-Za-z][A-Za-z0-9._-]*)",
                            key.get_ref()
                        ),
                    ));
                }
                let line = self.line(key.span());
                for value in values {
                    stack.params.push(Param::Pair(key.get_ref().clone(), value));
                    stack.written.push(WrittenParam {
                        layer: index,
                        grant,
                        line,
                    });
                }
            }
        }
        Ok(component)
    }

    /// A layer's component as [`ExportConfig`] names it: a built-in's name, or a path
    /// (taken from the file's directory).
    fn component(&self, span: Range<usize>, layer: &LayerTable, what: &str, role: &str) -> Result<String, ConfigError> {
        match (&layer.name, &layer.path) {
            (Some(name), None) if name.contains(['/', '.']) => Err(self.error(
                span,
                format!("{what}: {role} name '{name}' is a path: write it as path = \"{name}\""),
            )),
            (Some(name), None) => Ok(name.clone()),
            (None, Some(path)) => Ok(self.dir().join(path).to_string_lossy().into_owned()),
            _ => Err(self.error(
                span,
                format!("{what}: a {role} is given by name (a built-in) or by path (a .wasm file): one of them"),
            )),
        }
    }
}

fn line_of(export: &ExportConfig) -> usize {
    export.written.as_ref().map_or(0, |written| written.line)
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut digest = [0; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}

fn parse(text: &str, path: &Path, limits: Limits) -> Result<FileConfig, ConfigError> {
    let file = Text { text, path };
    let document: Document = toml::from_str(text).map_err(|e| file.toml_error(&e))?;
    let server = document.server;
    let fixed = Fixed {
        listen: document.listen.map(|table| file.listen(table)).transpose()?,
        tls: document.tls.map(|table| file.tls(table)).transpose()?,
        threads: server.threads,
        max_connections: server.max_connections,
        memory_budget: server.memory_budget.map(|size| size.0),
        structured_replies: server.structured_replies,
        mask_handshake: server.mask_handshake,
        handshake_timeout: server
            .handshake_timeout
            .map(|seconds| {
                Duration::try_from_secs_f64(*seconds.get_ref())
                    .map_err(|_| file.error(seconds.span(), "handshake-timeout must be a number of seconds"))
            })
            .transpose()?,
        keepalive: server.keepalive,
        meta_contexts: server.meta_contexts,
        oldstyle: server.oldstyle,
    };
    if document.export.is_empty() {
        return Err(ConfigError(format!(
            "{}: no [[export]]: a config file serves the exports it lists",
            path.display()
        )));
    }
    if document.export.len() > MAX_EXPORTS {
        return Err(ConfigError(format!(
            "{}: {} exports, more than the {MAX_EXPORTS} a listing may hold",
            path.display(),
            document.export.len()
        )));
    }
    let mut exports: Vec<ExportConfig> = Vec::with_capacity(document.export.len());
    for table in document.export {
        let export = file.export(table, limits, &exports)?;
        exports.push(export);
    }
    let default_export = match document.default_export {
        None => None,
        Some(name) => {
            let named = |wanted: &str| exports.iter().any(|e| e.name.as_deref() == Some(wanted));
            if !named(name.get_ref()) {
                return Err(file.error(
                    name.span(),
                    format!("default-export: no export is named '{}'", name.get_ref()),
                ));
            }
            if name.get_ref() != "" && named("") {
                return Err(file.error(
                    name.span(),
                    "default-export: an export named \"\" already answers the empty name",
                ));
            }
            Some(name.into_inner())
        }
    };
    Ok(FileConfig {
        fixed,
        exports,
        default_export,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sha256_hex;

    const LIMITS: Limits = Limits {
        memory: 2 << 30,
        call_timeout: Duration::from_secs(60),
    };

    fn parse_at(text: &str) -> Result<FileConfig, String> {
        parse(text, Path::new("/etc/nbdbox/exports.toml"), LIMITS).map_err(|e| e.to_string())
    }

    fn pair(key: &str, value: &str) -> Param {
        Param::Pair(key.to_owned(), value.to_owned())
    }

    #[test]
    fn a_full_file() {
        let file = parse_at(
            r#"
default-export = "disk"
[listen]
address = "127.0.0.1"
port = 10810
[server]
threads = 4
memory-budget = "8G"
structured-replies = false
handshake-timeout = 1.5
keepalive = true
[tls]
mode = "require"
certificates = "pki"
verify-peer = true

[[export]]
name = "scratch"
description = "RAM"
memory-limit = "256M"
call-timeout = 2.5
plugin = { name = "memory", params = { size = "1G" } }

[[export]]
name = "disk"
readonly = true
[export.plugin]
path = "plugins/disk.wasm"
sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
grants = { file = "disk.img" }
params = { cache = "none", header = ["a", 1, true] }
[[export.filter]]
name = "retry"
params = { retries = 3 }
[[export.filter]]
name = "readahead"
"#,
        )
        .unwrap();
        assert_eq!(
            file.fixed,
            Fixed {
                listen: Some(Listen::Tcp {
                    ipaddr: Some("127.0.0.1".into()),
                    port: Some("10810".into())
                }),
                tls: Some(TlsSettings {
                    mode: Some(crate::config::TlsMode::Require),
                    certificates: Some("/etc/nbdbox/pki".into()),
                    psk: None,
                    verify_peer: true,
                }),
                threads: Some(4),
                max_connections: None,
                memory_budget: Some(8 << 30),
                structured_replies: Some(false),
                mask_handshake: None,
                handshake_timeout: Some(Duration::from_millis(1500)),
                keepalive: Some(true),
                meta_contexts: None,
                oldstyle: None,
            }
        );
        assert_eq!(file.default_export.as_deref(), Some("disk"));
        let [scratch, disk] = &file.exports[..] else {
            panic!("{:?}", file.exports)
        };
        assert_eq!(scratch.name.as_deref(), Some("scratch"));
        assert_eq!(scratch.description.as_deref(), Some("RAM"));
        assert_eq!(scratch.limits.memory, 256 << 20);
        assert_eq!(scratch.limits.call_timeout, Duration::from_millis(2500));
        assert_eq!(scratch.plugin.as_deref(), Some("memory"));
        assert_eq!(scratch.params, [pair("size", "1G")]);

        assert!(disk.readonly);
        assert_eq!(disk.limits.memory, LIMITS.memory);
        assert_eq!(disk.plugin.as_deref(), Some("/etc/nbdbox/plugins/disk.wasm"));
        assert_eq!(disk.filters, ["retry", "readahead"]);
        assert_eq!(
            disk.params,
            [
                pair("retries", "3"),
                pair("file", "disk.img"),
                pair("cache", "none"),
                pair("header", "a"),
                pair("header", "1"),
                pair("header", "true"),
            ]
        );
        let written = disk.written.as_ref().unwrap();
        assert_eq!(written.line, 24);
        let places: Vec<(usize, bool, usize)> = written.params.iter().map(|p| (p.layer, p.grant, p.line)).collect();
        assert_eq!(
            places,
            [
                (0, false, 34),
                (2, true, 30),
                (2, false, 31),
                (2, false, 31),
                (2, false, 31),
                (2, false, 31)
            ]
        );
        assert_eq!(disk.pins.len(), 1);
        assert_eq!(
            sha256_hex(&disk.pins[0].sha256),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("[[export]]\nname = \"a\"\nplugin = { name = \"memory\" }\nsize = 1\n", "exports.toml:4: unknown field `size`"),
            ("[[export]]\nname = \"a\"\nplugin = { name = \"memory\", parms = {} }\n", "exports.toml:3: unknown field `parms`"),
            ("[listen]\nunix = \"/s\"\nport = 1\n[[export]]\nname=\"a\"\nplugin={name=\"memory\"}\n", "exports.toml:1: [listen]"),
            (
                "[[export]]\nname = \"a\"\nplugin = { name = \"memory\" }\n\n[[export]]\nname = \"a\"\nplugin = { name = \"memory\" }\n",
                "exports.toml:6: export 'a' is already defined at line 1",
            ),
            ("[[export]]\nname = \"a\"\n", "exports.toml:1: export 'a' has no plugin"),
            ("[[export]]\nplugin = { name = \"memory\" }\n", "exports.toml:1: an export needs a name"),
            (
                "[[export]]\nname = \"a\"\nplugin = { path = \"x.wasm\", sha256 = \"abc\" }\n",
                "exports.toml:3: export 'a': sha256 must be 64 hexadecimal digits",
            ),
            (
                "[[export]]\nname = \"a\"\n[export.plugin]\nname = \"memory\"\nparams = { \"1bad\" = 1 }\n",
                "exports.toml:5: export 'a': '1bad' is not a parameter name",
            ),
            (
                "[[export]]\nname = \"a\"\n[export.plugin]\nname = \"memory\"\nparams = { size = { x = 1 } }\n",
                "exports.toml:5: invalid type: map, expected a string, number or boolean",
            ),
            (
                "default-export = \"b\"\n[[export]]\nname = \"a\"\nplugin = { name = \"memory\" }\n",
                "exports.toml:1: default-export: no export is named 'b'",
            ),
            (
                "[[export]]\nname = \"a\"\nmemory-limit = \"1Q\"\nplugin = { name = \"memory\" }\n",
                "exports.toml:3: could not parse size",
            ),
            (
                "[[export]]\nname = \"a\"\ncall-timeout = 0\nplugin = { name = \"memory\" }\n",
                "exports.toml:3: export 'a': call-timeout must be a positive number",
            ),
            (
                "[[export]]\nname = \"a\"\nplugin = { name = \"./x.wasm\" }\n",
                "exports.toml:3: export 'a': plugin name './x.wasm' is a path",
            ),
            ("", "exports.toml: no [[export]]"),
        ];
        for (text, expected) in cases {
            let error = parse_at(text).unwrap_err();
            assert!(
                error.contains(expected),
                "{text:?}\n  gave: {error}\n  want: {expected}"
            );
        }
    }

    fn info(name: &str, keys: &[(&str, ConfigKind)]) -> LayerInfo {
        LayerInfo {
            name: name.to_owned(),
            version: String::new(),
            description: String::new(),
            magic_config_key: None,
            config_keys: keys
                .iter()
                .map(|&(key, kind)| crate::api::ConfigKey {
                    name: key.to_owned(),
                    kind,
                    help: String::new(),
                })
                .collect(),
            thread_model: crate::api::ThreadModel::Parallel,
            shared_state: false,
        }
    }

    #[test]
    fn settle_checks_each_layer_and_makes_path_grants_absolute() {
        let retry = info("retry", &[("retries", ConfigKind::Text)]);
        let file = info("file", &[("file", ConfigKind::File), ("cache", ConfigKind::Text)]);
        let settle_text = |text: &str| {
            let mut export = parse_at(text).map_err(|e| e.to_string())?.exports.remove(0);
            settle(&mut export, &[&retry, &file]).map_err(|e| e.to_string())?;
            Ok::<_, String>(export.params)
        };
        let head = "[[export]]\nname = \"d\"\n[[export.filter]]\nname = \"retry\"\n";
        let good = format!(
            "{head}params = {{ retries = 2 }}\n[export.plugin]\nname = \"file\"\ngrants = {{ file = \"d.img\" }}\n"
        );
        assert_eq!(
            settle_text(&good).unwrap(),
            [pair("retries", "2"), pair("file", "/etc/nbdbox/d.img")]
        );
        let cases = [
            (
                format!("{head}[export.plugin]\nname = \"file\"\nparams = {{ file = \"d.img\" }}\n"),
                "exports.toml:7: 'file' of plugin 'file' is a grant (file): write it under grants",
            ),
            (
                format!("{head}[export.plugin]\nname = \"file\"\ngrants = {{ cache = \"none\" }}\n"),
                "exports.toml:7: 'cache' of plugin 'file' is a text parameter, not a grant",
            ),
            (
                format!("{head}params = {{ file = \"x\" }}\n[export.plugin]\nname = \"file\"\n"),
                "exports.toml:5: filter 'retry' has no parameter 'file' (its parameters: retries)",
            ),
            (
                format!("{head}[export.plugin]\nname = \"file\"\ngrants = {{ dir = \"/d\" }}\n"),
                "exports.toml:7: plugin 'file' has no parameter 'dir' (its parameters: file, cache)",
            ),
            (
                format!("{head}[export.plugin]\nname = \"file\"\nparams = {{ retries = 1 }}\n"),
                "exports.toml:7: filter 'retry', above plugin 'file', takes 'retries' first",
            ),
        ];
        for (text, expected) in cases {
            let error = settle_text(&text).unwrap_err();
            assert!(error.contains(expected), "{text}\n  gave: {error}\n  want: {expected}");
        }
        // The plugin decides about keys it does not declare.
        let undeclared = format!("{head}[export.plugin]\nname = \"file\"\nparams = {{ colour = \"red\" }}\n");
        assert_eq!(settle_text(&undeclared).unwrap(), [pair("colour", "red")]);
    }
}
