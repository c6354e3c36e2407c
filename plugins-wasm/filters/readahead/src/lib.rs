//! readahead: after each read, ask the layer below to prefetch the window that follows
//! (`next.cache`), growing the window while reads stay sequential (nbdkit ≥1.32). Reads pass
//! through untouched, so data is byte-identical; a write, trim or zero starts the window
//! over. Does nothing when the layer below cannot cache natively, as nbdkit.

use nbdbox_filter_sdk::filter::{Connection, Guest, GuestConnection};
use nbdbox_filter_sdk::{
    forward, forward_globals, next, CacheMode, CmdFlags, PluginInfo, ReadBuf, Result, ThreadModel, WriteBuf,
};
use std::cell::Cell;

const WINDOW_MIN: u64 = 32 * 1024;
const WINDOW_MAX: u64 = 4 * 1024 * 1024;

struct Readahead;

struct ReadaheadConnection {
    next: next::Connection,
    size: Cell<u64>,
    enabled: Cell<bool>,
    window: Cell<u64>,
    /// Offset of the previous read, and where its prefetch ended.
    last_offset: Cell<u64>,
    last_end: Cell<u64>,
}

impl Guest for Readahead {
    type Connection = ReadaheadConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "readahead".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Prefetch the data after each read".into(),
            magic_config_key: None,
            config_keys: Vec::new(),
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    forward_globals!(config, config_complete, get_ready, list_exports);
}

impl ReadaheadConnection {
    fn next(&self) -> &next::Connection {
        &self.next
    }

    /// nbdkit's window rule: double after a read past the previous prefetch, keep it while
    /// reads move forward, start over otherwise.
    fn advance_window(&self, offset: u64) -> u64 {
        let window = if self.last_end.get() < offset {
            (self.window.get() * 2).min(WINDOW_MAX)
        } else if self.last_offset.get() < offset {
            self.window.get()
        } else {
            WINDOW_MIN
        };
        self.window.set(window);
        self.last_offset.set(offset);
        window
    }

    /// After a write the next read gets the minimum window wherever it lands: with both marks
    /// at the top, `advance_window` neither doubles nor keeps (marks of 0 would double it).
    fn reset(&self) {
        self.window.set(WINDOW_MIN);
        self.last_offset.set(u64::MAX);
        self.last_end.set(u64::MAX);
    }
}

impl GuestConnection for ReadaheadConnection {
    fn open(readonly: bool, export_name: String) -> Result<Connection> {
        let next = next::Connection::open(readonly, &export_name)?;
        Ok(Connection::new(ReadaheadConnection {
            next,
            size: Cell::new(0),
            enabled: Cell::new(false),
            window: Cell::new(WINDOW_MIN),
            last_offset: Cell::new(0),
            last_end: Cell::new(0),
        }))
    }

    fn prepare(&self) -> Result<()> {
        self.next.prepare()?;
        self.size.set(self.next.get_size()?);
        let native = self.next.capabilities()?.can_cache == CacheMode::Native;
        if !native {
            nbdbox_filter_sdk::log_error("the layer below cannot cache natively, so this filter won't do anything");
        }
        self.enabled.set(native);
        Ok(())
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.next.pread(dst, count, offset, flags)?;
        let start = offset + u64::from(count);
        if self.enabled.get() && start < self.size.get() {
            let window = self.advance_window(offset).min(self.size.get() - start);
            self.last_end.set(start + window);
            // A hint: its failure must not fail the read.
            let _ = self.next.cache(window as u32, start, CmdFlags::empty());
        }
        Ok(())
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.reset();
        self.next.pwrite(src, count, offset, flags)
    }

    fn trim(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.reset();
        self.next.trim(count, offset, flags)
    }

    fn zero(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.reset();
        self.next.zero(count, offset, flags)
    }

    forward!(next; finalize, get_size, export_description, capabilities, block_size, flush, extents, cache);
}

nbdbox_filter_sdk::export_filter!(Readahead);
