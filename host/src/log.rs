//! Operator messages on stderr, as a value handed to whatever logs: `nbdbox: error: ...`
//! always, debug lines only with `-v`. Lines from components are escaped, truncated and
//! rate-limited here, so a component can neither forge a host line nor flood the log.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone)]
pub struct Log(Arc<Settings>);

struct Settings {
    verbose: bool,
    /// Each component's log allowance, by name.
    allowances: Mutex<HashMap<String, Allowance>>,
}

/// What one component may still log: a token bucket of bytes.
struct Allowance {
    bytes: f64,
    refilled: Instant,
    /// Lines dropped since the last one logged.
    suppressed: u64,
}

/// Bytes of log a component may write in a burst, and per second after it.
const LOG_BURST: f64 = (1 << 20) as f64;
const LOG_RATE: f64 = (256 << 10) as f64;

impl Allowance {
    fn new() -> Allowance {
        Allowance {
            bytes: LOG_BURST,
            refilled: Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether a line of `len` bytes may be logged now.
    fn spend(&mut self, len: usize) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * LOG_RATE;
        self.bytes = (self.bytes + earned).min(LOG_BURST);
        self.refilled = now;
        if self.bytes < len as f64 {
            self.suppressed += 1;
            return false;
        }
        self.bytes -= len as f64;
        true
    }
}

/// How severe a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

/// The longest component message logged whole (nbdkit's NBD_MAX_STRING).
const MAX_COMPONENT_MESSAGE: usize = 4096;

impl Log {
    pub fn new(verbose: bool) -> Log {
        Log(Arc::new(Settings {
            verbose,
            allowances: Mutex::default(),
        }))
    }

    pub fn verbose(&self) -> bool {
        self.0.verbose
    }

    pub fn line(&self, level: Level, args: fmt::Arguments<'_>) {
        let tag = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info | Level::Debug if !self.0.verbose => return,
            Level::Info | Level::Debug => "debug",
        };
        // One write per line, so lines from several threads do not interleave.
        let line = format!("nbdbox: {tag}: {args}\n");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// A message a component logged (`host.log`, or its stdout/stderr), tagged with its name.
    /// Past its allowance lines are dropped, and counted in the next line that gets through.
    pub fn component(&self, name: &str, level: Level, message: &str) {
        if matches!(level, Level::Info | Level::Debug) && !self.0.verbose {
            return;
        }
        let message = sanitize(message);
        let suppressed = {
            let mut allowances = self.0.allowances.lock().unwrap_or_else(|p| p.into_inner());
            let allowance = allowances.entry(name.to_owned()).or_insert_with(Allowance::new);
            if !allowance.spend(name.len() + message.len()) {
                return;
            }
            std::mem::take(&mut allowance.suppressed)
        };
        if suppressed > 0 {
            self.line(
                Level::Warning,
                format_args!("{name}: {suppressed} log lines dropped: more than {LOG_RATE} bytes a second"),
            );
        }
        self.line(level, format_args!("{name}: {message}"));
    }
}

/// Control characters escaped (`\n`, `\x1b`), at most [`MAX_COMPONENT_MESSAGE`] bytes kept.
pub fn sanitize(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_COMPONENT_MESSAGE) + 16);
    for c in message.chars() {
        if out.len() >= MAX_COMPONENT_MESSAGE {
            out.push_str(&format!("... ({} bytes in all)", message.len()));
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

macro_rules! error {
    ($log:expr, $($arg:tt)*) => { $log.line($crate::log::Level::Error, format_args!($($arg)*)) };
}

macro_rules! warning {
    ($log:expr, $($arg:tt)*) => { $log.line($crate::log::Level::Warning, format_args!($($arg)*)) };
}

macro_rules! debug {
    ($log:expr, $($arg:tt)*) => {
        if $log.verbose() {
            $log.line($crate::log::Level::Debug, format_args!($($arg)*))
        }
    };
}

pub(crate) use {debug, error, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("a\nnbdbox: error: forged"), "a\\nnbdbox: error: forged");
        assert_eq!(sanitize("\x1b[2J"), "\\u{1b}[2J");
        assert_eq!(sanitize("tab\tok é"), "tab\\tok é");
    }

    #[test]
    fn a_flood_is_cut_to_the_allowance() {
        let mut allowance = Allowance::new();
        let line = 4096;
        let logged = (0..10_000).filter(|_| allowance.spend(line)).count();
        // The burst, plus what the rate earned while the loop ran.
        assert!((256..=300).contains(&logged), "{logged}");
        assert_eq!(allowance.suppressed, 10_000 - logged as u64);
    }

    #[test]
    fn long_messages_are_truncated() {
        let long = "x".repeat(100_000);
        let out = sanitize(&long);
        assert!(out.len() < MAX_COMPONENT_MESSAGE + 40, "{}", out.len());
        assert!(out.ends_with("... (100000 bytes in all)"), "{out}");
    }
}
