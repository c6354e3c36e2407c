//! retry: when a request fails, wait, reopen the layer below and try again (nbdkit's retry
//! filter). `retries=N` (default 5), `retry-delay=SECONDS` (default 2), `retry-exponential=BOOL`
//! (default yes: the delay doubles each time), `retry-readonly=BOOL` (default no: reopen
//! read-only). After the last try the client gets the error. Requests are serialized per
//! connection (serialize-requests): a reopen must not race another request.

use nbdbox_filter_sdk::filter::{Connection, Guest, GuestConnection};
use nbdbox_filter_sdk::{
    config_key, error, forward_globals, next, parse_bool, BlockSize, Capabilities, CmdFlags, ConfigKind, Errno, Extent,
    PluginInfo, ReadBuf, Result, ThreadModel, WriteBuf,
};
use std::cell::{Cell, RefCell};

struct Settings {
    retries: u32,
    delay_seconds: u32,
    exponential: bool,
    readonly: bool,
}

thread_local! {
    static SETTINGS: RefCell<Settings> =
        const { RefCell::new(Settings { retries: 5, delay_seconds: 2, exponential: true, readonly: false }) };
}

struct Retry;

struct RetryConnection {
    /// None after a reopen failed: the next request tries to reopen first.
    next: RefCell<Option<next::Connection>>,
    readonly: bool,
    export_name: String,
    /// Set once a reopen was made read-only (retry-readonly).
    reopened_readonly: Cell<bool>,
    reopens: Cell<u32>,
}

fn parse_count(key: &str, value: &str) -> Result<u32> {
    value
        .parse()
        .map_err(|_| error(Errno::Einval, format!("{key}: '{value}' is not a whole number")))
}

impl Guest for Retry {
    type Connection = RetryConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "retry".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Reopen the layer below and retry failed requests".into(),
            magic_config_key: None,
            config_keys: vec![
                config_key("retries", ConfigKind::Text, "Number of retries (default 5)"),
                config_key(
                    "retry-delay",
                    ConfigKind::Text,
                    "Seconds to wait before the first retry (default 2)",
                ),
                config_key(
                    "retry-exponential",
                    ConfigKind::Boolean,
                    "Double the delay after each retry (default yes)",
                ),
                config_key(
                    "retry-readonly",
                    ConfigKind::Boolean,
                    "Reopen read-only after a failure (default no)",
                ),
            ],
            thread_model: ThreadModel::SerializeRequests,
            shared_state: false,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        SETTINGS.with(|s| {
            let mut s = s.borrow_mut();
            match key.as_str() {
                "retries" => s.retries = parse_count(&key, &value)?,
                "retry-delay" => match parse_count(&key, &value)? {
                    0 => return Err(error(Errno::Einval, "retry-delay cannot be 0")),
                    n => s.delay_seconds = n,
                },
                "retry-exponential" => s.exponential = parse_bool(&key, &value)?,
                "retry-readonly" => s.readonly = parse_bool(&key, &value)?,
                _ => return next::config(&key, &value),
            }
            Ok(())
        })
    }

    forward_globals!(config_complete, get_ready, list_exports);
}

impl RetryConnection {
    /// Run `op` on the layer below, retrying with a reopen in between while retries last.
    fn retry<T>(&self, what: &str, writes: bool, op: impl Fn(&next::Connection) -> Result<T>) -> Result<T> {
        let (retries, mut delay, exponential) = SETTINGS.with(|s| {
            (
                s.borrow().retries,
                u64::from(s.borrow().delay_seconds),
                s.borrow().exponential,
            )
        });
        let mut attempt = 0;
        loop {
            if writes && self.reopened_readonly.get() {
                return Err(error(Errno::Erofs, "retry: the export was reopened read-only"));
            }
            let result = match self.next.borrow().as_ref() {
                Some(next) => op(next),
                None => Err(error(Errno::Eshutdown, "retry: the layer below could not be reopened")),
            };
            let failure = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if attempt >= retries {
                return Err(failure);
            }
            attempt += 1;
            nbdbox_filter_sdk::log_error(&format!(
                "{what} failed ({:?}{}), retry {attempt} of {retries} in {delay} s",
                failure.errno,
                failure.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            ));
            if !nbdbox_filter_sdk::sleep(delay * 1_000_000_000) {
                return Err(failure);
            }
            if exponential {
                delay *= 2;
            }
            self.reopen();
        }
    }

    /// nbdkit's reopen: finalize and close the layer below, open it again and prepare it.
    fn reopen(&self) {
        let readonly = self.readonly || SETTINGS.with(|s| s.borrow().readonly);
        if let Some(old) = self.next.borrow_mut().take() {
            let _ = old.finalize();
        }
        let reopened = next::Connection::open(readonly, &self.export_name).and_then(|c| c.prepare().map(|()| c));
        self.reopens.set(self.reopens.get() + 1);
        match reopened {
            Ok(connection) => {
                self.reopened_readonly.set(readonly && !self.readonly);
                *self.next.borrow_mut() = Some(connection);
            }
            Err(e) => nbdbox_filter_sdk::log_error(&format!("reopen failed: {:?}", e.errno)),
        }
    }
}

impl GuestConnection for RetryConnection {
    fn open(readonly: bool, export_name: String) -> Result<Connection> {
        let connection = RetryConnection {
            next: RefCell::new(None),
            readonly,
            export_name,
            reopened_readonly: Cell::new(false),
            reopens: Cell::new(0),
        };
        // A failing open is retried too (nbdkit ≥1.32); the first attempt is a plain open.
        match next::Connection::open(readonly, &connection.export_name) {
            Ok(next) => *connection.next.borrow_mut() = Some(next),
            Err(_) => connection.retry("open", false, |_| Ok(()))?,
        }
        if connection.next.borrow().is_none() {
            return Err(error(Errno::Eio, "retry: could not open the layer below"));
        }
        Ok(Connection::new(connection))
    }

    fn prepare(&self) -> Result<()> {
        self.retry("prepare", false, |n| n.prepare())
    }

    fn finalize(&self) -> Result<()> {
        match self.next.borrow().as_ref() {
            Some(next) => next.finalize(),
            None => Ok(()),
        }
    }

    fn get_size(&self) -> Result<u64> {
        self.retry("get-size", false, |n| n.get_size())
    }

    fn export_description(&self) -> Option<String> {
        self.next.borrow().as_ref().and_then(|n| n.export_description())
    }

    fn capabilities(&self) -> Result<Capabilities> {
        self.retry("capabilities", false, |n| n.capabilities())
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        self.retry("block-size", false, |n| n.block_size())
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry("pread", false, |n| n.pread(dst, count, offset, flags))
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry("pwrite", true, |n| n.pwrite(src, count, offset, flags))
    }

    fn flush(&self, flags: CmdFlags) -> Result<()> {
        self.retry("flush", false, |n| n.flush(flags))
    }

    fn trim(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry("trim", true, |n| n.trim(count, offset, flags))
    }

    fn zero(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        // A fast zero that the layer below refuses is an answer, not a failure to retry.
        if flags.contains(CmdFlags::FAST_ZERO) {
            return match self.next.borrow().as_ref() {
                Some(next) => next.zero(count, offset, flags),
                None => Err(error(Errno::Enotsup, "retry: not open")),
            };
        }
        self.retry("zero", true, |n| n.zero(count, offset, flags))
    }

    fn extents(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.retry("extents", false, |n| n.extents(count, offset, flags))
    }

    fn cache(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.retry("cache", false, |n| n.cache(count, offset, flags))
    }
}

impl Drop for RetryConnection {
    fn drop(&mut self) {
        if self.reopens.get() > 0 {
            nbdbox_filter_sdk::debug(&format!("reopened the layer below {} time(s)", self.reopens.get()));
        }
    }
}

nbdbox_filter_sdk::export_filter!(Retry);
