//! retry: when a request fails, wait, reopen the layer below and try again (nbdkit's retry
//! filter, filters/retry/retry.c). `retries=N` (default 5), `retry-delay=SECONDS` (default 2),
//! `retry-exponential=BOOL` (default yes: the delay doubles each time), `retry-readonly=BOOL`
//! (default no: reopen read-only). After the last try the client gets the error. Requests are
//! serialized per connection (serialize-requests): a reopen must not race another request.

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{parse_bool, sleep};
use std::cell::Cell;

/// The filter's configuration; each connection keeps a copy.
#[derive(Clone, Copy)]
struct Retry {
    retries: u32,
    delay_seconds: u32,
    exponential: bool,
    readonly: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            retries: 5,
            delay_seconds: 2,
            exponential: true,
            readonly: false,
        }
    }
}

fn parse_count(key: &str, value: &str) -> Result<u32> {
    value
        .parse()
        .map_err(|_| error(Errno::Einval, format!("{key}: '{value}' is not a whole number")))
}

impl Retry {
    /// nbdkit's do_retry loop: run `op` until it succeeds or the retries are used up, sleeping
    /// before each retry and calling `recover` (the reopen) after the sleep. `refuse` is
    /// asked before each try: an error it gives ends the request at once, unretried.
    fn retry<T>(
        &self,
        what: &str,
        refuse: impl Fn() -> Option<Error>,
        mut op: impl FnMut() -> Result<T>,
        mut recover: impl FnMut(),
    ) -> Result<T> {
        let mut delay = u64::from(self.delay_seconds);
        let mut attempt = 0;
        loop {
            if let Some(refusal) = refuse() {
                return Err(refusal);
            }
            let failure = match op() {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if attempt >= self.retries {
                return Err(failure);
            }
            attempt += 1;
            nbdbox_filter_sdk::log_error(&format!(
                "{what} failed ({:?}{}), retry {attempt} of {} in {delay} s",
                failure.errno,
                failure.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
                self.retries,
            ));
            if !sleep(delay * 1_000_000_000) {
                return Err(failure);
            }
            if self.exponential {
                delay *= 2;
            }
            recover();
        }
    }
}

impl Filter for Retry {
    const NAME: &'static str = "retry";
    const DESCRIPTION: &'static str = "Reopen the layer below and retry failed requests";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("retries", Kind::Text, "Number of retries (default 5)"),
        Key::new(
            "retry-delay",
            Kind::Text,
            "Seconds to wait before the first retry (default 2)",
        ),
        Key::new(
            "retry-exponential",
            Kind::Bool,
            "Double the delay after each retry (default yes)",
        ),
        Key::new(
            "retry-readonly",
            Kind::Bool,
            "Reopen read-only after a failure (default no)",
        ),
    ];
    const THREAD_MODEL: ThreadModel = ThreadModel::SerializeRequests;
    type Connection = RetryConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "retries" => self.retries = parse_count(key, value)?,
            "retry-delay" => match parse_count(key, value)? {
                0 => return Err(error(Errno::Einval, "retry-delay cannot be 0")),
                n => self.delay_seconds = n,
            },
            "retry-exponential" => self.exponential = parse_bool(key, value)?,
            // retry-readonly
            _ => self.readonly = parse_bool(key, value)?,
        }
        Ok(())
    }

    /// A failing open is retried too (nbdkit ≥1.32), each try a fresh open; the first is
    /// a plain one.
    fn open_next(&self, readonly: bool, export_name: &str) -> Result<next::Connection> {
        let mut tries = 0;
        self.retry(
            "open",
            || None,
            || {
                tries += 1;
                next::Connection::open(readonly || (tries > 1 && self.readonly), export_name)
            },
            || {},
        )
    }

    fn open(&self, _next: &Next, readonly: bool, export_name: &str) -> Result<RetryConnection> {
        Ok(RetryConnection {
            settings: *self,
            readonly,
            export_name: export_name.into(),
            reopened_readonly: Cell::new(false),
            reopens: Cell::new(0),
        })
    }
}

struct RetryConnection {
    settings: Retry,
    readonly: bool,
    export_name: String,
    /// Set once a reopen was made read-only (retry-readonly).
    reopened_readonly: Cell<bool>,
    reopens: Cell<u32>,
}

impl RetryConnection {
    /// Run `op` on the layer below, reopening it between tries. `writes`: the request
    /// changes data, so after a read-only reopen it fails at once, unretried (retry.c).
    fn retry<T>(&self, next: &Next, what: &str, writes: bool, op: impl Fn() -> Result<T>) -> Result<T> {
        self.settings.retry(
            what,
            || {
                (writes && self.reopened_readonly.get())
                    .then(|| error(Errno::Erofs, "retry: the export was reopened read-only"))
            },
            || {
                if next.is_open() {
                    op()
                } else {
                    Err(error(Errno::Eshutdown, "retry: the layer below could not be reopened"))
                }
            },
            || self.reopen(next),
        )
    }

    /// nbdkit's reopen: finalize and close the layer below, open it again and prepare it.
    fn reopen(&self, next: &Next) {
        let readonly = self.readonly || self.settings.readonly;
        if let Some(old) = next.replace(None) {
            let _ = old.finalize();
        }
        let reopened = next::Connection::open(readonly, &self.export_name).and_then(|c| c.prepare().map(|()| c));
        self.reopens.set(self.reopens.get() + 1);
        match reopened {
            Ok(connection) => {
                self.reopened_readonly.set(readonly && !self.readonly);
                next.replace(Some(connection));
            }
            Err(e) => nbdbox_filter_sdk::log_error(&format!("reopen failed: {:?}", e.errno)),
        }
    }
}

impl FilterConnection for RetryConnection {
    fn get_size(&self, next: &Next) -> Result<u64> {
        self.retry(next, "get-size", false, || next.get_size())
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        self.retry(next, "capabilities", false, || next.capabilities())
    }

    fn block_size(&self, next: &Next) -> Result<Option<BlockSize>> {
        self.retry(next, "block-size", false, || next.block_size())
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry(next, "pread", false, || next.pread(dst, count, offset, flags))
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry(next, "pwrite", true, || next.pwrite(src, count, offset, flags))
    }

    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        self.retry(next, "flush", false, || next.flush(flags))
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry(next, "trim", true, || next.trim(count, offset, flags))
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        // A fast zero that the layer below refuses is an answer, not a failure to retry.
        if flags.contains(CmdFlags::FAST_ZERO) {
            if !next.is_open() {
                return Err(error(Errno::Enotsup, "retry: not open"));
            }
            return next.zero(count, offset, flags);
        }
        self.retry(next, "zero", true, || next.zero(count, offset, flags))
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.retry(next, "extents", false, || next.extents(count, offset, flags))
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry(next, "cache", false, || next.cache(count, offset, flags))
    }
}

impl Drop for RetryConnection {
    fn drop(&mut self) {
        if self.reopens.get() > 0 {
            nbdbox_filter_sdk::debug(&format!("reopened the layer below {} time(s)", self.reopens.get()));
        }
    }
}

nbdbox_filter_sdk::filter!(Retry);
