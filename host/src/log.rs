//! Operator messages, as a value handed to whatever logs: `nbdbox: error: ...` always, debug
//! lines only with `-v`. Errors and warnings go where `--log` says (nbdkit(1): stderr, syslog,
//! nowhere, or appended to a file; by default stderr, or syslog once daemonized); debug lines
//! always go to stderr. Lines from components are escaped, truncated and rate-limited here,
//! so a component can neither forge a host line nor flood the log.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone)]
pub struct Log(Arc<Settings>);

struct Settings {
    verbose: bool,
    /// `nbdbox`, or `nbdbox[NAME]` with `--name`: what every line starts with.
    program: String,
    /// Where errors and warnings go; `Default` until the process daemonizes.
    sink: Mutex<Sink>,
    /// Each component's log allowance, by name.
    allowances: Mutex<HashMap<String, Allowance>>,
}

/// `--log`: where errors and warnings go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LogTo {
    /// stderr in the foreground, syslog once daemonized (`--log=default` or no `--log`).
    #[default]
    Default,
    Stderr,
    Syslog,
    /// Discarded.
    Null,
    /// Appended to this file (an absolute path).
    File(PathBuf),
}

impl LogTo {
    /// nbdkit's `--log` values: `stderr`, `syslog`, `null`, `default` or an absolute path.
    pub fn parse(value: &str) -> Result<LogTo, String> {
        Ok(match value {
            "default" => LogTo::Default,
            "stderr" => LogTo::Stderr,
            "syslog" => LogTo::Syslog,
            "null" => LogTo::Null,
            path if path.starts_with('/') => LogTo::File(path.into()),
            _ => {
                return Err(format!(
                    "'{value}' is not stderr, syslog, null, default or an absolute path"
                ))
            }
        })
    }
}

/// An open destination for errors and warnings.
enum Sink {
    Default,
    Stderr,
    Syslog,
    Null,
    File(File),
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
    /// Everything on stderr, as before any option is read.
    pub fn new(verbose: bool) -> Log {
        Log::build(verbose, Sink::Default, None)
    }

    /// The log `-v`, `--log` and `--name` ask for; a `--log` file is opened (created if need
    /// be) for appending now, so a path that cannot be written is a startup error.
    pub fn configured(verbose: bool, to: &LogTo, name: Option<&str>) -> std::io::Result<Log> {
        let sink = match to {
            LogTo::Default => Sink::Default,
            LogTo::Stderr => Sink::Stderr,
            LogTo::Syslog => Sink::Syslog,
            LogTo::Null => Sink::Null,
            LogTo::File(path) => Sink::File(std::fs::OpenOptions::new().append(true).create(true).open(path)?),
        };
        Ok(Log::build(verbose, sink, name))
    }

    fn build(verbose: bool, sink: Sink, name: Option<&str>) -> Log {
        let program = match name {
            Some(name) => format!("nbdbox[{}]", sanitize(name)),
            None => "nbdbox".to_owned(),
        };
        if matches!(sink, Sink::Syslog | Sink::Default) {
            open_syslog(&program);
        }
        Log(Arc::new(Settings {
            verbose,
            program,
            sink: Mutex::new(sink),
            allowances: Mutex::default(),
        }))
    }

    pub fn verbose(&self) -> bool {
        self.0.verbose
    }

    /// The process went into the background, its stderr to /dev/null: errors now go to
    /// syslog unless `--log` chose otherwise (nbdkit(1), `--log=default`).
    pub fn daemonized(&self) {
        let mut sink = self.0.sink.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*sink, Sink::Default) {
            *sink = Sink::Syslog;
        }
    }

    pub fn line(&self, level: Level, args: fmt::Arguments<'_>) {
        let tag = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info | Level::Debug if !self.0.verbose => return,
            Level::Info | Level::Debug => "debug",
        };
        let program = &self.0.program;
        if tag == "debug" {
            return write_stderr(&format!("{program}: debug: {args}\n"));
        }
        let mut sink = self.0.sink.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *sink {
            Sink::Default | Sink::Stderr => write_stderr(&format!("{program}: {tag}: {args}\n")),
            Sink::Null => {}
            Sink::File(file) => {
                let _ = file.write_all(format!("{program}: {tag}: {args}\n").as_bytes());
            }
            Sink::Syslog => {
                let priority = if level == Level::Error {
                    libc::LOG_ERR
                } else {
                    libc::LOG_WARNING
                };
                let message = CString::new(format!("{tag}: {args}").replace('\0', "\\0")).unwrap_or_default();
                // SAFETY: both strings are NUL-terminated and live across the call; the
                // format takes exactly the one string argument given.
                unsafe { libc::syslog(priority, c"%s".as_ptr(), message.as_ptr()) };
            }
        }
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

/// One write per line, so lines from several threads do not interleave.
fn write_stderr(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// openlog(3) keeps the identity pointer: it is leaked, once per process.
fn open_syslog(program: &str) {
    static OPENED: std::sync::Once = std::sync::Once::new();
    OPENED.call_once(|| {
        let ident = CString::new(program).unwrap_or_default();
        // SAFETY: the identity string lives for the rest of the process.
        unsafe {
            libc::openlog(
                Box::leak(ident.into_boxed_c_str()).as_ptr(),
                libc::LOG_PID,
                libc::LOG_DAEMON,
            )
        };
    });
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
    fn log_destinations() {
        assert_eq!(LogTo::parse("stderr"), Ok(LogTo::Stderr));
        assert_eq!(LogTo::parse("default"), Ok(LogTo::Default));
        assert_eq!(LogTo::parse("/var/log/x"), Ok(LogTo::File("/var/log/x".into())));
        assert!(LogTo::parse("relative.log").unwrap_err().contains("absolute"));
    }

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
