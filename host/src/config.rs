//! What to run, as one value: the command line builds it (`cli`), the lifecycle carries it
//! out. Combinations that cannot work are refused here, before anything is loaded.

pub mod file;

use crate::runtime::Limits;
use std::path::PathBuf;

/// Everything nbdbox is asked to do.
#[derive(Debug)]
pub struct Config {
    pub action: Action,
    pub verbose: bool,
    pub listen: Listen,
    /// Stay in the foreground (otherwise daemonize once listening).
    pub foreground: bool,
    pub pidfile: Option<PathBuf>,
    /// Captive mode: the command to run once listening.
    pub run: Option<String>,
    pub exit_with_parent: bool,
    /// `-u` / `-g`: who to become once listening (nbdkit's change_user).
    pub user: Option<String>,
    pub group: Option<String>,
    /// `-e`: the export name `$exportname` and `$uri` carry.
    pub exportname: Option<String>,
    pub server: ServerOptions,
    /// What clients may choose among: the command line's one export, or a config file's.
    pub exports: Vec<ExportConfig>,
    /// The export a client asking for "" gets, by name (a config file's `default-export`).
    pub default_export: Option<String>,
    /// `--config FILE`: where the exports came from, read again on SIGHUP.
    pub config_file: Option<file::Source>,
    /// What all component instances together may hold, in bytes (`--memory-budget`).
    pub memory_budget: u64,
    /// `-D NAME.FLAG=N`, in command-line order.
    pub debug_flags: Vec<crate::lifecycle::debug_flags::DebugFlag>,
    /// `--log`: where errors and warnings go.
    pub log_to: crate::log::LogTo,
    /// `--name`: what log lines are tagged with, `nbdbox[NAME]`.
    pub name: Option<String>,
    /// `--print-uri`: print the endpoint's URI once listening.
    pub print_uri: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Serve,
    /// `--dump-plugin`: print the plugin's metadata.
    DumpPlugin,
    /// `--dump-config`: print the build's settings.
    DumpConfig,
    /// `--help`, with the layers' parameters when a plugin is named.
    Help,
    /// `--dump-config-toml`: print the configuration file equivalent to the command line.
    DumpConfigToml,
    /// `--version`, with each layer's version when a plugin is named.
    Version,
    /// `--short-options` (false) or `--long-options` (true): the option names, for completion.
    ListOptions {
        long: bool,
    },
}

/// Where clients connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// `-i`, `-p` (None: all addresses, port 10809).
    Tcp {
        ipaddr: Option<String>,
        port: Option<String>,
    },
    /// `-U PATH`, or `-U -` for a private socket in a new directory.
    Unix(UnixSocket),
    /// `-s`: one client on stdin/stdout.
    Stdio,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnixSocket {
    Private,
    Path(PathBuf),
}

/// `--tls`: nbdkit's three modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS is refused.
    Off,
    /// The client chooses.
    On,
    /// Nothing but STARTTLS and ABORT is answered before TLS.
    Require,
}

/// TLS as the command line gives it; `server::tls` loads the credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// None: nbdkit's default (on when credentials load, off otherwise).
    pub mode: Option<TlsMode>,
    pub certificates: Option<PathBuf>,
    pub psk: Option<PathBuf>,
    pub verify_peer: bool,
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub no_structured_replies: bool,
    pub handshake_mask: u16,
    pub threads: usize,
    /// Connections served at once; later ones are refused at GO (`--max-connections`).
    pub max_connections: usize,
    pub tls: TlsSettings,
    /// `--timeout`: how long a client may take from connecting to the end of negotiation.
    pub handshake_timeout: Option<std::time::Duration>,
    /// `--keepalive`: SO_KEEPALIVE on TCP connections.
    pub keepalive: bool,
    /// `--no-mc`: meta contexts are not offered.
    pub no_meta_contexts: bool,
    /// `-o`: the oldstyle protocol (no option haggling: the default export at once).
    pub oldstyle: bool,
}

/// One export: its layers, their parameters and limits.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// The name that selects it; None (the command line's) serves every name, its layers
    /// deciding what a name means, as nbdkit's one stack does.
    pub name: Option<String>,
    /// What NBD_OPT_LIST says of it, beside its name.
    pub description: Option<String>,
    /// A built-in name or a path to a `.wasm` component.
    pub plugin: Option<String>,
    /// Outermost first.
    pub filters: Vec<String>,
    pub params: Vec<Param>,
    pub readonly: bool,
    pub limits: Limits,
    /// The sha256 digests component files must have (a config file's `sha256`).
    pub pins: Vec<file::Pin>,
    /// Where a config file wrote this export, to check once its layers are loaded.
    pub written: Option<file::Written>,
}

/// One parameter as given: `key=value`, or a bare value for the plugin's magic key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Pair(String, String),
    Bare(String),
}

/// A configuration that cannot be carried out; the message names the option at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// nbdkit's key grammar: `[A-Za-z][A-Za-z0-9._-]*`.
fn is_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Param {
    /// `key=value` when the text before the first `=` is a valid key, otherwise bare.
    pub fn parse(text: &str) -> Param {
        match text.split_once('=') {
            Some((key, value)) if is_key(key) => Param::Pair(key.to_owned(), value.to_owned()),
            _ => Param::Bare(text.to_owned()),
        }
    }
}

/// The (key, value) pairs, bare values given to the plugin's magic key.
pub fn config_pairs(params: &[Param], magic_key: Option<&str>) -> Result<Vec<(String, String)>, ConfigError> {
    params
        .iter()
        .map(|param| match (param, magic_key) {
            (Param::Pair(key, value), _) => Ok((key.clone(), value.clone())),
            (Param::Bare(value), Some(key)) => Ok((key.to_owned(), value.clone())),
            (Param::Bare(value), None) => Err(ConfigError(format!(
                "expecting key=value on the command line but got: {value}"
            ))),
        })
        .collect()
}

impl Config {
    /// Refuse combinations nbdkit refuses, naming the options.
    pub fn check(&self) -> Result<(), ConfigError> {
        let refuse = |why: &str| Err(ConfigError(why.to_owned()));
        if self.listen == Listen::Stdio && (self.run.is_some() || self.action == Action::DumpPlugin) {
            return refuse("-s cannot be used with --run or --dump-plugin");
        }
        // The oldstyle protocol has no STARTTLS (nbdkit refuses the same).
        if self.server.oldstyle && self.server.tls.mode == Some(TlsMode::Require) {
            return refuse("-o (oldstyle) cannot be used with --tls=require");
        }
        for export in &self.exports {
            if export.limits.call_timeout.is_zero() {
                return refuse("--call-timeout must be a positive number of seconds");
            }
            if export.limits.memory > self.memory_budget {
                return Err(ConfigError(format!(
                    "--memory-limit ({} bytes) is larger than --memory-budget ({} bytes): no instance could start",
                    export.limits.memory, self.memory_budget
                )));
            }
        }
        if self.server.max_connections == 0 {
            return refuse("--max-connections must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(params: &[&str], magic: Option<&str>) -> Result<Vec<(String, String)>, ConfigError> {
        let params: Vec<Param> = params.iter().map(|p| Param::parse(p)).collect();
        config_pairs(&params, magic)
    }

    #[test]
    fn magic_key_and_key_grammar() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(pairs(&["1M"], Some("size")).unwrap(), [pair("size", "1M")]);
        assert_eq!(pairs(&["size=1M"], Some("size")).unwrap(), [pair("size", "1M")]);
        assert_eq!(pairs(&["./a=b"], Some("file")).unwrap(), [pair("file", "./a=b")]);
        assert_eq!(pairs(&["x=1.img"], Some("file")).unwrap(), [pair("x", "1.img")]);
        assert_eq!(pairs(&["k=v=w"], None).unwrap(), [pair("k", "v=w")]);
        assert!(pairs(&["bare"], None).unwrap_err().to_string().contains("bare"));
    }
}
