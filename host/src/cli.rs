//! nbdkit's command line: `nbdbox [OPTIONS] PLUGIN [[KEY=]VALUE ...] [--run CMD]`, with GNU
//! option permutation (options may follow the plugin) and nbdkit's option names and aliases.

use crate::config::{
    Action, Config, ConfigError, ExportConfig, Listen, Param, ServerOptions, TlsMode, TlsSettings, UnixSocket,
};
use crate::lifecycle::debug_flags::DebugFlag;
use crate::log::LogTo;
use crate::runtime::budget::MemoryBudget;
use crate::runtime::Limits;
use clap::{CommandFactory, Parser};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "nbdbox",
    disable_version_flag = true,
    about = "An NBD server whose plugins and filters are sandboxed WebAssembly components",
    disable_help_flag = true,
    after_help = builtin_help()
)]
pub struct Cli {
    /// Serve on a Unix socket; `-` makes a private one in a new 0700 directory
    #[arg(short = 'U', long = "unix", value_name = "SOCKET", allow_hyphen_values = true)]
    pub unix: Option<String>,
    /// TCP port (default 10809)
    #[arg(short = 'p', long = "port")]
    pub port: Option<String>,
    /// Listen on this address only (default: all)
    #[arg(short = 'i', long = "ipaddr", visible_alias = "ip-addr")]
    pub ipaddr: Option<String>,
    /// Serve read-only
    #[arg(short = 'r', long = "readonly", visible_alias = "read-only")]
    pub readonly: bool,
    /// Export name shown in $exportname and $uri for --run
    #[arg(short = 'e', long = "exportname", visible_aliases = ["export", "export-name"])]
    pub exportname: Option<String>,
    /// Stay in the foreground (do not daemonize)
    #[arg(short = 'f', long = "foreground", visible_alias = "no-fork")]
    pub foreground: bool,
    /// Write the server's PID here once it is ready for clients
    #[arg(short = 'P', long = "pidfile", visible_alias = "pid-file")]
    pub pidfile: Option<PathBuf>,
    /// Debug messages on stderr
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Stack a filter (repeatable; the first is nearest the client)
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Captive mode: run CMD under /bin/sh with $uri $nbd $port $unixsocket $exportname, exit with its status
    #[arg(long = "run", value_name = "CMD", allow_hyphen_values = true)]
    pub run: Option<String>,
    /// Serve one connection on stdin/stdout
    #[arg(short = 's', long = "single", visible_alias = "stdin")]
    pub single: bool,
    /// Worker threads per connection for parallel plugins
    #[arg(short = 't', long = "threads", default_value_t = 16)]
    pub threads: usize,
    /// Exit when the parent process exits (implies -f)
    #[arg(long = "exit-with-parent")]
    pub exit_with_parent: bool,
    /// Become this user once listening and holding every grant
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Become this group once listening and holding every grant
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,
    /// Refuse structured replies
    #[arg(long = "no-sr", visible_alias = "no-structured-replies")]
    pub no_sr: bool,
    /// Offer no meta contexts (no block status)
    #[arg(long = "no-mc", visible_alias = "no-meta-contexts")]
    pub no_mc: bool,
    /// Serve the oldstyle protocol: the default export, no negotiation
    #[arg(short = 'o', long = "oldstyle", visible_alias = "old-style")]
    pub oldstyle: bool,
    /// Newstyle protocol (the default; accepted for nbdkit's command lines)
    #[arg(short = 'n', long = "newstyle", visible_alias = "new-style")]
    pub newstyle: bool,
    /// Debug flag NAME.FLAG=N (repeatable): nbdkit.* for the server, or a layer's name
    #[arg(short = 'D', long = "debug", value_name = "NAME.FLAG=N", value_parser = DebugFlag::parse)]
    pub debug: Vec<DebugFlag>,
    /// Errors to stderr, syslog, null (discarded) or an absolute path (appended); default:
    /// stderr, syslog once in the background
    #[arg(long = "log", value_name = "stderr|syslog|null|default|/PATH", value_parser = LogTo::parse)]
    pub log: Option<LogTo>,
    /// Tag log lines nbdbox[NAME]
    #[arg(long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// Print the URI clients connect to, once listening
    #[arg(long = "print-uri", visible_aliases = ["print-url", "show-uri", "show-url"])]
    pub print_uri: bool,
    /// Drop clients that have not finished negotiating within this delay (1.5, 500ms, 10s)
    #[arg(long = "timeout", visible_alias = "time-out", value_name = "DELAY", value_parser = parse_delay)]
    pub timeout: Option<Duration>,
    /// SO_KEEPALIVE on TCP connections
    #[arg(long = "keepalive", visible_alias = "keep-alive")]
    pub keepalive: bool,
    /// Print the version, and with a PLUGIN each layer's, and exit
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Print the short option names and exit (for shell completion)
    #[arg(long = "short-options", hide = true)]
    pub short_options: bool,
    /// Print the long option names and exit (for shell completion)
    #[arg(long = "long-options", hide = true)]
    pub long_options: bool,
    /// Handshake flags to offer (bit 0 fixed newstyle, bit 1 no zeroes)
    #[arg(long = "mask-handshake", value_name = "MASK", default_value_t = 3)]
    pub mask_handshake: u16,
    /// Memory cap per component instance (nbdkit size syntax)
    #[arg(long = "memory-limit", value_name = "SIZE", default_value = "2G", value_parser = parse_size_arg)]
    pub memory_limit: u64,
    /// Memory all component instances together may hold (default: 3/4 of the machine's)
    #[arg(long = "memory-budget", value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_budget: Option<u64>,
    /// Connections served at once; later clients are refused at GO with a message
    #[arg(long = "max-connections", value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// Deadline for one call into a component, in seconds
    #[arg(long = "call-timeout", value_name = "SECONDS", default_value_t = 60.0)]
    pub call_timeout: f64,
    /// Print the plugin's metadata and exit
    #[arg(long = "dump-plugin")]
    pub dump_plugin: bool,
    /// TLS: off, on (the client chooses) or require
    #[arg(long = "tls", value_name = "off|on|require", value_parser = parse_tls_mode)]
    pub tls: Option<TlsMode>,
    /// Directory of ca-cert.pem, server-cert.pem, server-key.pem and optional ca-crl.pem
    #[arg(long = "tls-certificates", value_name = "DIR")]
    pub tls_certificates: Option<PathBuf>,
    /// Pre-shared keys (psktool's username:hexkey lines); overrides certificates
    #[arg(long = "tls-psk", value_name = "FILE")]
    pub tls_psk: Option<PathBuf>,
    /// Require a client certificate signed by ca-cert.pem
    #[arg(long = "tls-verify-peer")]
    pub tls_verify_peer: bool,
    /// Print build configuration and exit
    #[arg(long = "dump-config")]
    pub dump_config: bool,
    /// Serve the exports a TOML file describes (SIGHUP reads it again)
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the configuration file equivalent to this command line and exit
    #[arg(long = "dump-config-toml")]
    pub dump_config_toml: bool,
    /// Print help (with a PLUGIN, its parameters too)
    #[arg(long = "help", short = 'h')]
    pub help: bool,
    /// The plugin: a built-in name or a path to a .wasm component
    pub plugin: Option<String>,
    /// Plugin parameters: key=value, or a bare value for the plugin's magic key
    #[arg(allow_hyphen_values = false)]
    pub params: Vec<String>,
}

/// The built-in components, named from the one list `build.rs` makes.
fn builtin_help() -> String {
    format!(
        "PLUGIN is a built-in plugin ({}) or a path to a .wasm component.\n\
         FILTER is a built-in filter ({}) or a path to a .wasm component.\n\
         `nbdbox PLUGIN --help` describes a plugin's parameters.",
        crate::runtime::PLUGIN_NAMES.join(", "),
        crate::runtime::FILTER_NAMES.join(", ")
    )
}

/// nbdkit's --tls values, with its aliases (server/main.c).
pub fn parse_tls_mode(value: &str) -> Result<TlsMode, String> {
    match value {
        "off" | "no" | "false" | "0" => Ok(TlsMode::Off),
        "on" | "yes" | "true" | "1" => Ok(TlsMode::On),
        "require" | "required" | "force" => Ok(TlsMode::Require),
        _ => Err(format!("'{value}' is not off, on or require")),
    }
}

fn parse_size_arg(value: &str) -> Result<u64, String> {
    crate::parse::parse_size(value)
}

/// nbdkit_parse_delay(3): seconds, fractions allowed, or with a unit `s`, `ms`, `us`, `ns`.
fn parse_delay(value: &str) -> Result<Duration, String> {
    let (number, scale) = [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(unit, scale)| value.strip_suffix(unit).map(|n| (n, *scale)))
        .unwrap_or((value, 1.0));
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| format!("'{value}' is not a delay: give seconds (1.5) or a unit (500ms, 10s)"))
}

/// Every option's names, for `--short-options` (`-U`) or `--long-options` (`--unix`, and
/// the aliases), as nbdkit lists them for bash completion.
pub fn option_names(long: bool) -> Vec<String> {
    let command = Cli::command();
    let listed = command
        .get_arguments()
        .filter(|arg| !matches!(arg.get_long(), Some("short-options" | "long-options")));
    if long {
        listed
            .flat_map(|arg| {
                arg.get_long()
                    .into_iter()
                    .chain(arg.get_all_aliases().unwrap_or_default())
            })
            .map(|name| format!("--{name}"))
            .collect()
    } else {
        listed
            .filter_map(|arg| arg.get_short())
            .map(|c| format!("-{c}"))
            .collect()
    }
}

/// Parameters with `@PATH` (PATH containing a `/`) replaced by the `key=value` lines of that
/// file, blank lines and `#` comments skipped, and `@PATH` inside a file relative to it
/// (nbdkit(1), "@PATH", nbdkit ≥ 1.46).
fn expand_parameter_files(params: Vec<String>) -> Result<Vec<String>, ConfigError> {
    fn expand(
        param: String,
        base: Option<&std::path::Path>,
        depth: usize,
        out: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let Some(path) = param.strip_prefix('@').filter(|p| p.contains('/')) else {
            out.push(param);
            return Ok(());
        };
        if depth == 16 {
            return Err(ConfigError(format!("{param}: parameter files nest more than 16 deep")));
        }
        let path = match base {
            Some(dir) => dir.join(path),
            None => path.into(),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("cannot read parameters from {}: {e}", path.display())))?;
        for line in text.lines() {
            if !line.trim().is_empty() && !line.starts_with('#') {
                expand(line.to_owned(), path.parent(), depth + 1, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for param in params {
        expand(param, None, 0, &mut out)?;
    }
    Ok(out)
}

impl Cli {
    /// The [`Config`] this command line asks for, or why it cannot be run.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let config_file = self.config.clone();
        let (file_options, either_options) = self.options_a_config_file_sets();
        let endpoints = [self.port.is_some(), self.unix.is_some(), self.single]
            .iter()
            .filter(|&&b| b)
            .count();
        if endpoints > 1 {
            return Err(ConfigError("-p, -U and -s cannot be used in this combination".into()));
        }
        let call_timeout = Duration::try_from_secs_f64(self.call_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError("--call-timeout must be a positive number of seconds".into()))?;
        let listen = if self.single {
            Listen::Stdio
        } else if let Some(unix) = self.unix {
            Listen::Unix(match unix.as_str() {
                "-" => UnixSocket::Private,
                path => UnixSocket::Path(path.into()),
            })
        } else {
            Listen::Tcp {
                ipaddr: self.ipaddr,
                port: self.port,
            }
        };
        let action = if self.short_options || self.long_options {
            Action::ListOptions {
                long: self.long_options,
            }
        } else if self.dump_config {
            Action::DumpConfig
        } else if self.dump_config_toml {
            Action::DumpConfigToml
        } else if self.help {
            Action::Help
        } else if self.version {
            Action::Version
        } else if self.dump_plugin {
            Action::DumpPlugin
        } else {
            Action::Serve
        };
        let params = expand_parameter_files(self.params)?;
        let mut config = Config {
            action,
            verbose: self.verbose,
            listen,
            foreground: self.foreground,
            pidfile: self.pidfile,
            run: self.run,
            exit_with_parent: self.exit_with_parent,
            user: self.user,
            group: self.group,
            exportname: self.exportname,
            server: ServerOptions {
                no_structured_replies: self.no_sr,
                handshake_mask: self.mask_handshake,
                threads: self.threads,
                max_connections: self.max_connections,
                tls: TlsSettings {
                    mode: self.tls,
                    certificates: self.tls_certificates,
                    psk: self.tls_psk,
                    verify_peer: self.tls_verify_peer,
                },
                handshake_timeout: self.timeout,
                keepalive: self.keepalive,
                no_meta_contexts: self.no_mc,
                oldstyle: self.oldstyle,
            },
            exports: vec![ExportConfig {
                name: None,
                description: None,
                plugin: self.plugin,
                filters: self.filters,
                params: params.iter().map(|p| Param::parse(p)).collect(),
                readonly: self.readonly,
                limits: Limits {
                    memory: self.memory_limit,
                    call_timeout,
                },
                pins: Vec::new(),
                written: None,
            }],
            default_export: None,
            config_file: None,
            memory_budget: self.memory_budget.unwrap_or_else(MemoryBudget::default_total),
            debug_flags: self.debug,
            log_to: self.log.unwrap_or_default(),
            name: self.name,
            print_uri: self.print_uri,
        };
        if let Some(path) = config_file {
            crate::config::file::apply(&path, &mut config, &file_options, &either_options)?;
        }
        config.check()?;
        Ok(config)
    }

    /// The options given that a config file sets too: those that describe exports or the
    /// server (never allowed beside `--config`), and those that say where to listen or how
    /// to use TLS (allowed when the file has no `[listen]`, no `[tls]`).
    fn options_a_config_file_sets(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let unset = Cli::try_parse_from(["nbdbox"]).expect("no arguments parse");
        let given =
            |pairs: &[(bool, &'static str)]| pairs.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
        let file_options = given(&[
            (self.plugin.is_some(), "PLUGIN"),
            (!self.params.is_empty(), "PLUGIN parameters"),
            (!self.filters.is_empty(), "--filter"),
            (self.readonly, "-r"),
            (self.threads != unset.threads, "-t"),
            (self.no_sr, "--no-sr"),
            (self.mask_handshake != unset.mask_handshake, "--mask-handshake"),
            (self.memory_limit != unset.memory_limit, "--memory-limit"),
            (self.memory_budget.is_some(), "--memory-budget"),
            (self.max_connections != unset.max_connections, "--max-connections"),
            (self.call_timeout != unset.call_timeout, "--call-timeout"),
            (self.timeout.is_some(), "--timeout"),
            (self.keepalive, "--keepalive"),
            (self.no_mc, "--no-mc"),
        ]);
        let either_options = given(&[
            (self.unix.is_some(), "-U"),
            (self.port.is_some(), "-p"),
            (self.ipaddr.is_some(), "-i"),
            (self.single, "-s"),
            (self.tls.is_some(), "--tls"),
            (self.tls_certificates.is_some(), "--tls-certificates"),
            (self.tls_psk.is_some(), "--tls-psk"),
            (self.tls_verify_peer, "--tls-verify-peer"),
        ]);
        (file_options, either_options)
    }
}

/// What a command line without options asks for: the defaults a config file starts from.
pub fn defaults() -> Config {
    let unset = Cli::try_parse_from(["nbdbox"]).expect("no arguments parse");
    unset.into_config().expect("the defaults are a valid configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_after_the_plugin() {
        let cli = Cli::try_parse_from(["nbdbox", "memory", "1M", "-U", "-", "--run", "true", "-r"]).unwrap();
        assert_eq!(cli.plugin.as_deref(), Some("memory"));
        assert_eq!(cli.params, ["1M"]);
        assert_eq!(cli.unix.as_deref(), Some("-"));
        assert_eq!(cli.run.as_deref(), Some("true"));
        assert!(cli.readonly);
    }

    #[test]
    fn delays_in_nbdkit_syntax() {
        assert_eq!(parse_delay("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_delay("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_delay("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_delay("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_delay("7us"), Ok(Duration::from_micros(7)));
        assert!(parse_delay("soon").is_err());
        assert!(parse_delay("-1").is_err());
    }

    #[test]
    fn option_lists_name_every_alias() {
        let long = option_names(true);
        for name in [
            "--unix",
            "--debug",
            "--no-meta-contexts",
            "--keep-alive",
            "--print-uri",
            "--version",
        ] {
            assert!(long.iter().any(|n| n == name), "{name} missing from {long:?}");
        }
        assert!(!long.iter().any(|n| n == "--long-options"));
        let short = option_names(false);
        for name in ["-U", "-D", "-n", "-V", "-v"] {
            assert!(short.iter().any(|n| n == name), "{name} missing from {short:?}");
        }
    }

    #[test]
    fn parameter_files_expand_in_place_and_nest() {
        let dir = std::env::temp_dir().join(format!("nbdbox-params-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "# sizes\nsize=1M\n\n@./sub/b.txt\n").unwrap();
        std::fs::write(dir.join("sub/b.txt"), "  \nallocator=malloc\n").unwrap();
        let at = format!("@{}/a.txt", dir.display());
        let expanded = expand_parameter_files(vec!["x=1".into(), at, "@nodir".into()]).unwrap();
        assert_eq!(expanded, ["x=1", "size=1M", "allocator=malloc", "@nodir"]);
        let missing = format!("@{}/none.txt", dir.display());
        assert!(expand_parameter_files(vec![missing])
            .unwrap_err()
            .to_string()
            .contains("none.txt"));
        std::fs::write(dir.join("loop.txt"), "@./loop.txt\n").unwrap();
        let looped = format!("@{}/loop.txt", dir.display());
        assert!(expand_parameter_files(vec![looped])
            .unwrap_err()
            .to_string()
            .contains("16"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn call_timeout_out_of_range_names_the_option() {
        for timeout in ["1e20", "0", "-1", "NaN"] {
            let arg = format!("--call-timeout={timeout}");
            let cli = Cli::try_parse_from(["nbdbox", &arg, "memory", "1M"]).unwrap();
            let error = cli.into_config().unwrap_err().to_string();
            assert!(error.contains("--call-timeout"), "{timeout}: {error}");
        }
    }
}
