//! nbdkit's command line: `nbdbox [OPTIONS] PLUGIN [[KEY=]VALUE ...] [--run CMD]`, with GNU
//! option permutation (options may follow the plugin) and nbdkit's option names and aliases.

use crate::config::{Action, Config, ConfigError, ExportConfig, Listen, Param, ServerOptions, UnixSocket};
use crate::runtime::budget::MemoryBudget;
use crate::runtime::Limits;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "nbdbox",
    version,
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
    /// Refuse structured replies
    #[arg(long = "no-sr")]
    pub no_sr: bool,
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
    /// Print build configuration and exit
    #[arg(long = "dump-config")]
    pub dump_config: bool,
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

fn parse_size_arg(value: &str) -> Result<u64, String> {
    crate::parse::parse_size(value)
}

impl Cli {
    /// The [`Config`] this command line asks for, or why it cannot be run.
    pub fn into_config(self) -> Result<Config, ConfigError> {
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
        let action = if self.dump_config {
            Action::DumpConfig
        } else if self.help {
            Action::Help
        } else if self.dump_plugin {
            Action::DumpPlugin
        } else {
            Action::Serve
        };
        let config = Config {
            action,
            verbose: self.verbose,
            listen,
            foreground: self.foreground,
            pidfile: self.pidfile,
            run: self.run,
            exit_with_parent: self.exit_with_parent,
            exportname: self.exportname,
            server: ServerOptions {
                no_structured_replies: self.no_sr,
                handshake_mask: self.mask_handshake,
                threads: self.threads,
                max_connections: self.max_connections,
            },
            export: ExportConfig {
                plugin: self.plugin,
                filters: self.filters,
                params: self.params.iter().map(|p| Param::parse(p)).collect(),
                readonly: self.readonly,
                limits: Limits {
                    memory: self.memory_limit,
                    call_timeout,
                },
            },
            memory_budget: self.memory_budget.unwrap_or_else(MemoryBudget::default_total),
        };
        config.check()?;
        Ok(config)
    }
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
    fn call_timeout_out_of_range_names_the_option() {
        for timeout in ["1e20", "0", "-1", "NaN"] {
            let arg = format!("--call-timeout={timeout}");
            let cli = Cli::try_parse_from(["nbdbox", &arg, "memory", "1M"]).unwrap();
            let error = cli.into_config().unwrap_err().to_string();
            assert!(error.contains("--call-timeout"), "{timeout}: {error}");
        }
    }
}
