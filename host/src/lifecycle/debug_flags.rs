//! `-D NAME.FLAG=N` debug flags (nbdkit(1), nbdkit's server/debug-flags.c). A malformed flag
//! is a usage error; a flag nothing reads is only warned about, never fatal, since
//! integrators pass some whatever the server (virt-v2v: `-D nbdkit.backend.datapath=0`).

use crate::log::{self, Log};
use crate::runtime::DebugFlags;

/// One `-D NAME.FLAG=N`: NAME is `nbdkit` for the server, or a plugin's or filter's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugFlag {
    pub name: String,
    pub flag: String,
    pub value: i32,
}

/// The server flags nbdkit(1) documents ("SERVER DEBUG FLAGS"). nbdbox writes no per-request
/// backend lines to suppress, and its TLS has no GnuTLS log level, so only `environ` changes
/// what it does; the others are accepted as nbdkit accepts them.
const SERVER_FLAGS: &[&str] = &[
    "backend.controlpath",
    "backend.datapath",
    "environ",
    "tls.log",
    "tls.session",
];

impl DebugFlag {
    /// `NAME.FLAG=N`: NAME up to the first `.`, FLAG up to the first `=`, both non-empty, N
    /// an integer (decimal, or hexadecimal after `0x`).
    pub fn parse(arg: &str) -> Result<DebugFlag, String> {
        let malformed = || format!("-D (Debug Flag) must have the format NAME.FLAG=N, not '{arg}'");
        let (name, rest) = arg.split_once('.').ok_or_else(malformed)?;
        let (flag, value) = rest.split_once('=').ok_or_else(malformed)?;
        if name.is_empty() || flag.is_empty() || name.contains('=') {
            return Err(malformed());
        }
        let (negative, digits) = match value.strip_prefix('-') {
            Some(digits) => (true, digits),
            None => (false, value.strip_prefix('+').unwrap_or(value)),
        };
        let magnitude = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            Some(hex) => i64::from_str_radix(hex, 16),
            None => digits.parse::<i64>(),
        }
        .map_err(|_| malformed())?;
        let value = i32::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| malformed())?;
        Ok(DebugFlag {
            name: name.to_owned(),
            flag: flag.to_owned(),
            value,
        })
    }
}

/// Act on the server's flags and warn about every flag nothing reads, once the layers (named
/// `layers`) are loaded and configured, as nbdkit does before `--help`, `--version` or
/// serving. A component reads its flags through `host.debug-flag`, usually while configured.
pub fn apply(flags: &[DebugFlag], layers: &[&str], read: &DebugFlags, log: &Log) {
    for flag in flags {
        let spelled = format!("-D {}.{}", flag.name, flag.flag);
        if flag.name == "nbdkit" {
            if !SERVER_FLAGS.contains(&flag.flag.as_str()) {
                log::warning!(log, "{spelled}: nbdbox has no server debug flag '{}'", flag.flag);
            } else if flag.flag == "environ" && flag.value != 0 {
                for (key, value) in std::env::vars_os() {
                    log::debug!(log, "{}={}", key.to_string_lossy(), value.to_string_lossy());
                }
            }
        } else if read.was_read(&flag.name, &flag.flag) {
            continue;
        } else if layers.contains(&flag.name.as_str()) {
            log::warning!(log, "{spelled}: {} did not read debug flag '{}'", flag.name, flag.flag);
        } else {
            log::warning!(log, "debug flag {spelled} was not used");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbdkit_flag_grammar() {
        let flag = |name: &str, flag: &str, value| DebugFlag {
            name: name.into(),
            flag: flag.into(),
            value,
        };
        assert_eq!(
            DebugFlag::parse("nbdkit.backend.datapath=0"),
            Ok(flag("nbdkit", "backend.datapath", 0))
        );
        assert_eq!(DebugFlag::parse("vddk.stats=1"), Ok(flag("vddk", "stats", 1)));
        assert_eq!(DebugFlag::parse("ssh.log=0x10"), Ok(flag("ssh", "log", 16)));
        assert_eq!(DebugFlag::parse("a.b=-2"), Ok(flag("a", "b", -2)));
        for bad in ["bad", "x.y=", "x.y=z", ".y=1", "x.=1", "x=1.y", "x.y=99999999999"] {
            assert!(DebugFlag::parse(bad).unwrap_err().contains("NAME.FLAG=N"), "{bad}");
        }
    }
}
