//! retry-request: retry a single failed request, without reopening anything (nbdkit's
//! filters/retry-request/retry-request.c). `retry-request-retries=N` (default 2),
//! `retry-request-delay=SECONDS` (default 2), `retry-request-open=BOOL` (default true:
//! a failing open is retried the same way).
//!
//! State: none beyond the settings; connections are independent, requests run in parallel.

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{log_error, parse_bool, sleep};

#[derive(Clone, Copy)]
struct RetryRequest {
    retries: u32,
    delay_seconds: u32,
    retry_open: bool,
}

impl Default for RetryRequest {
    fn default() -> Self {
        RetryRequest {
            retries: 2,
            delay_seconds: 2,
            retry_open: true,
        }
    }
}

fn parse_count(key: &str, value: &str) -> Result<u32> {
    value
        .parse()
        .map_err(|_| error(Errno::Einval, format!("{key}: could not parse number: {value}")))
}

impl RetryRequest {
    /// Run `op` until it succeeds or the retries are used up, waiting before each retry.
    fn run<T>(&self, what: &str, op: impl Fn() -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            let failure = match op() {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if attempt >= self.retries {
                return Err(failure);
            }
            attempt += 1;
            log_error(&format!(
                "{what} failed ({:?}), retry {attempt} of {} in {} s",
                failure.errno, self.retries, self.delay_seconds
            ));
            if !sleep(u64::from(self.delay_seconds) * 1_000_000_000) {
                return Err(failure);
            }
        }
    }
}

impl Filter for RetryRequest {
    const NAME: &'static str = "retry-request";
    const DESCRIPTION: &'static str = "nbdkit retry request filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("retry-request-retries", Kind::Text, "Number of retries (default 2)"),
        Key::new(
            "retry-request-delay",
            Kind::Text,
            "Seconds to wait before retry (default 2)",
        ),
        Key::new(
            "retry-request-open",
            Kind::Bool,
            "Retry opening the plugin (default true)",
        ),
    ];
    type Connection = RetryRequest;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "retry-request-retries" => self.retries = parse_count(key, value)?,
            "retry-request-delay" => match parse_count(key, value)? {
                0 => return Err(error(Errno::Einval, "retry-request-delay cannot be 0")),
                n => self.delay_seconds = n,
            },
            _ => self.retry_open = parse_bool(key, value)?,
        }
        Ok(())
    }

    fn open_next(&self, readonly: bool, export_name: &str) -> Result<next::Connection> {
        let open = || next::Connection::open(readonly, export_name);
        if self.retry_open {
            self.run("open", open)
        } else {
            open()
        }
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<RetryRequest> {
        Ok(*self)
    }
}

impl FilterConnection for RetryRequest {
    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.run("pread", || next.pread(dst, count, offset, flags))
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.run("pwrite", || next.pwrite(src, count, offset, flags))
    }

    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        self.run("flush", || next.flush(flags))
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.run("trim", || next.trim(count, offset, flags))
    }

    /// A fast zero refused with ENOTSUP is an answer, not a failure: it is not retried.
    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        if flags.contains(CmdFlags::FAST_ZERO) {
            return next.zero(count, offset, flags);
        }
        self.run("zero", || next.zero(count, offset, flags))
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.run("extents", || next.extents(count, offset, flags))
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.run("cache", || next.cache(count, offset, flags))
    }
}

nbdbox_filter_sdk::filter!(RetryRequest);
