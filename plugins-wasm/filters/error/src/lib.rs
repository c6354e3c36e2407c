//! error: nbdkit-error-filter(1), injecting errors into requests at a chosen rate
//! (filters/error/error.c). `error=`, `error-rate=` and `error-file=` set all six calls it
//! covers (pread, pwrite, trim, zero, extents, cache); `error-CALL=`, `error-CALL-rate=` and
//! `error-CALL-file=` set one. Defaults: EIO, rate 0 (never), no file. A file is a
//! trigger-file grant: errors are injected only while it exists, which the host checks on
//! each request without opening it.

mod rate;

use std::cell::RefCell;

use nbdbox_filter_sdk::grants;
use nbdbox_filter_sdk::prelude::*;
use xrandom::Xoshiro;

/// The calls nbdkit's error filter covers, by the name its keys and messages use; a call's
/// settings are `settings[call as usize]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Pread,
    Pwrite,
    Trim,
    Zero,
    Extents,
    Cache,
}

const CALLS: [Call; 6] = [
    Call::Pread,
    Call::Pwrite,
    Call::Trim,
    Call::Zero,
    Call::Extents,
    Call::Cache,
];

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Pread => "pread",
            Call::Pwrite => "pwrite",
            Call::Trim => "trim",
            Call::Zero => "zero",
            Call::Extents => "extents",
            Call::Cache => "cache",
        }
    }
}

/// What one call gets: nbdkit's `struct error_settings`.
#[derive(Clone, Copy)]
struct Settings {
    error: Errno,
    /// 0.0 never, 1.0 always.
    rate: f64,
    /// The trigger-file key whose file must exist for an error to be injected.
    file: Option<&'static str>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            error: Errno::Eio,
            rate: 0.0,
            file: None,
        }
    }
}

/// The error names the NBD protocol can carry, as error.c accepts them.
const ERRORS: [(&str, Errno); 6] = [
    ("EPERM", Errno::Eperm),
    ("EIO", Errno::Eio),
    ("ENOMEM", Errno::Enomem),
    ("EINVAL", Errno::Einval),
    ("ENOSPC", Errno::Enospc),
    ("ESHUTDOWN", Errno::Eshutdown),
];

fn parse_error(key: &str, value: &str) -> Result<Errno> {
    ERRORS
        .iter()
        .find(|(name, _)| *name == value)
        .map(|&(_, errno)| errno)
        .ok_or_else(|| error(Errno::Einval, format!("{key}: unknown error name '{value}'")))
}

fn error_name(errno: Errno) -> &'static str {
    ERRORS.iter().find(|(_, e)| *e == errno).map_or("EIO", |(name, _)| name)
}

/// Every key: the three for all calls, then three per call.
const CONFIG_KEYS: &[Key] = &[
    Key::new(
        "error",
        Kind::Text,
        "error=EPERM|EIO|ENOMEM|EINVAL|ENOSPC|ESHUTDOWN  The error indication to return (default EIO).",
    ),
    Key::new(
        "error-rate",
        Kind::Text,
        "error-rate=0%..100%|0..1  Rate of errors to generate (default 0).",
    ),
    Key::new(
        "error-file",
        Kind::TriggerFile,
        "error-file=TRIGGER  Inject errors only while TRIGGER exists.",
    ),
    Key::new(
        "error-pread",
        Kind::Text,
        "error-pread*, error-pwrite*, error-trim*, error-zero*,",
    ),
    Key::new(
        "error-pread-rate",
        Kind::Text,
        "error-extents*, error-cache*: the same settings",
    ),
    Key::new("error-pread-file", Kind::TriggerFile, "for one kind of request only."),
    Key::new("error-pwrite", Kind::Text, ""),
    Key::new("error-pwrite-rate", Kind::Text, ""),
    Key::new("error-pwrite-file", Kind::TriggerFile, ""),
    Key::new("error-trim", Kind::Text, ""),
    Key::new("error-trim-rate", Kind::Text, ""),
    Key::new("error-trim-file", Kind::TriggerFile, ""),
    Key::new("error-zero", Kind::Text, ""),
    Key::new("error-zero-rate", Kind::Text, ""),
    Key::new("error-zero-file", Kind::TriggerFile, ""),
    Key::new("error-extents", Kind::Text, ""),
    Key::new("error-extents-rate", Kind::Text, ""),
    Key::new("error-extents-file", Kind::TriggerFile, ""),
    Key::new("error-cache", Kind::Text, ""),
    Key::new("error-cache-rate", Kind::Text, ""),
    Key::new("error-cache-file", Kind::TriggerFile, ""),
];

#[derive(Default)]
struct ErrorFilter {
    settings: [Settings; 6],
}

/// error.c seeds its one random state from time(NULL) at load; here each connection has its
/// own state, and connections opened in the same second get distinct seeds from a host
/// counter of connections.
fn connection_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now ^ (nbdbox_filter_sdk::counter_add("connections", 1) as u64).rotate_left(32)
}

impl ErrorFilter {
    /// The settings `key` changes: all of them for `error*`, one call's for `error-CALL*`.
    fn targets(&mut self, key: &str) -> (&mut [Settings], &'static str) {
        let rest = &key["error".len()..];
        for (i, call) in CALLS.iter().enumerate() {
            if let Some(field) = rest.strip_prefix('-').and_then(|r| r.strip_prefix(call.name())) {
                if field.is_empty() || field.starts_with('-') {
                    return (std::slice::from_mut(&mut self.settings[i]), field_name(field));
                }
            }
        }
        (&mut self.settings[..], field_name(rest))
    }
}

/// A connection: the filter's settings and a random state of its own.
struct Injecting {
    settings: [Settings; 6],
    random: RefCell<Xoshiro>,
}

impl Injecting {
    /// error.c's random_error: whether this call fails, and with what.
    fn inject(&self, call: Call) -> Result<()> {
        let settings = self.settings[call as usize];
        // As error.c's `rate <= 0`: a NaN rate goes on (and then always injects).
        if settings.rate <= 0.0 {
            return Ok(());
        }
        if let Some(file) = settings.file {
            if !grants::exists(file).unwrap_or(false) {
                return Ok(());
            }
        }
        if !rate::always(settings.rate) {
            let draw = self.random.borrow_mut().next_u64() & u64::from(u32::MAX);
            if !rate::fires(draw, settings.rate) {
                return Ok(());
            }
        }
        Err(error(
            settings.error,
            format!("injecting {} error into {}", error_name(settings.error), call.name()),
        ))
    }
}

/// "" for `error`/`error-CALL`, "rate" or "file" for the others.
fn field_name(field: &str) -> &'static str {
    match field {
        "-rate" => "rate",
        "-file" => "file",
        _ => "",
    }
}

impl Filter for ErrorFilter {
    const NAME: &'static str = "error";
    const DESCRIPTION: &'static str = "Inject errors into requests, for testing clients";
    const CONFIG_KEYS: &'static [Key] = CONFIG_KEYS;
    type Connection = Injecting;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        // The declared keys are 'static: keep the one a trigger file is looked up by.
        let key: &'static str = CONFIG_KEYS.iter().find(|k| k.name == key).map_or("", |k| k.name);
        let (targets, field) = self.targets(key);
        match field {
            "rate" => {
                let rate = rate::parse(value).map_err(|why| error(Errno::Einval, format!("{key}: {why}")))?;
                targets.iter_mut().for_each(|s| s.rate = rate);
            }
            "file" => targets.iter_mut().for_each(|s| s.file = Some(key)),
            _ => {
                let errno = parse_error(key, value)?;
                targets.iter_mut().for_each(|s| s.error = errno);
            }
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Injecting> {
        Ok(Injecting {
            settings: self.settings,
            random: RefCell::new(Xoshiro::new(connection_seed())),
        })
    }
}

impl FilterConnection for Injecting {
    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.inject(Call::Pread)?;
        next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.inject(Call::Pwrite)?;
        next.pwrite(src, count, offset, flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.inject(Call::Trim)?;
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.inject(Call::Zero)?;
        next.zero(count, offset, flags)
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.inject(Call::Extents)?;
        next.extents(count, offset, flags)
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.inject(Call::Cache)?;
        next.cache(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(ErrorFilter);
