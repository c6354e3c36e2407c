//! nbdkit's command line: `nbdbox [OPTIONS] PLUGIN [[KEY=]VALUE ...] [--run CMD]`, with GNU
//! option permutation (options may follow the plugin) and nbdkit's option names and aliases.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "nbdbox",
    version,
    about = "An NBD server whose plugins and filters are sandboxed WebAssembly components",
    disable_help_flag = true,
    after_help = "PLUGIN is a built-in plugin (memory, example1, file, tar) or a path to a .wasm component.\n`nbdbox PLUGIN --help` describes a plugin's parameters."
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

fn parse_size_arg(value: &str) -> Result<u64, String> {
    crate::parse::parse_size(value)
}

/// nbdkit's key grammar: `[A-Za-z][A-Za-z0-9._-]*`.
fn is_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Split plugin parameters into (key, value) pairs: `key=value` when the text before the first
/// `=` is a valid key, otherwise a bare value for the magic key.
pub fn config_pairs(params: &[String], magic_key: Option<&str>) -> Result<Vec<(String, String)>, String> {
    params
        .iter()
        .map(|param| match param.split_once('=') {
            Some((key, value)) if is_key(key) => Ok((key.to_owned(), value.to_owned())),
            _ => match magic_key {
                Some(key) => Ok((key.to_owned(), param.clone())),
                None => Err(format!("expecting key=value on the command line but got: {param}")),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(params: &[&str], magic: Option<&str>) -> Result<Vec<(String, String)>, String> {
        let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        config_pairs(&params, magic)
    }

    #[test]
    fn magic_key_and_key_grammar() {
        assert_eq!(pairs(&["1M"], Some("size")).unwrap(), [("size".into(), "1M".into())]);
        assert_eq!(
            pairs(&["size=1M"], Some("size")).unwrap(),
            [("size".into(), "1M".into())]
        );
        assert_eq!(
            pairs(&["./a=b"], Some("file")).unwrap(),
            [("file".into(), "./a=b".into())]
        );
        assert_eq!(
            pairs(&["x=1.img"], Some("file")).unwrap(),
            [("x".into(), "1.img".into())]
        );
        assert_eq!(pairs(&["k=v=w"], None).unwrap(), [("k".into(), "v=w".into())]);
        assert!(pairs(&["bare"], None).unwrap_err().contains("bare"));
    }

    #[test]
    fn options_after_the_plugin() {
        let cli = Cli::try_parse_from(["nbdbox", "memory", "1M", "-U", "-", "--run", "true", "-r"]).unwrap();
        assert_eq!(cli.plugin.as_deref(), Some("memory"));
        assert_eq!(cli.params, ["1M"]);
        assert_eq!(cli.unix.as_deref(), Some("-"));
        assert_eq!(cli.run.as_deref(), Some("true"));
        assert!(cli.readonly);
    }
}
