//! readahead: after each read, ask the layer below to prefetch the window that follows
//! (NBD_CMD_CACHE), growing the window while reads stay sequential (nbdkit ≥1.32,
//! filters/readahead/readahead.c). Reads pass through untouched, so data is byte-identical;
//! a write, trim or zero starts the window over. Does nothing when the layer below cannot
//! cache natively or serve requests in parallel, as nbdkit. The cache request runs on a host
//! thread (`background.cache`), so the read that asked for it does not wait; it goes through
//! the host's gate like any other.

use nbdbox_filter_sdk::prelude::*;
use std::cell::Cell;

const WINDOW_MIN: u64 = 32 * 1024;
const WINDOW_MAX: u64 = 4 * 1024 * 1024;

#[derive(Default)]
struct Readahead;

impl Filter for Readahead {
    const NAME: &'static str = "readahead";
    const DESCRIPTION: &'static str = "Prefetch the data after each read";
    type Connection = ReadaheadConnection;

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<ReadaheadConnection> {
        Ok(ReadaheadConnection {
            size: Cell::new(0),
            enabled: Cell::new(false),
            window: Cell::new(WINDOW_MIN),
            last_offset: Cell::new(0),
            last_end: Cell::new(0),
        })
    }
}

struct ReadaheadConnection {
    size: Cell<u64>,
    enabled: Cell<bool>,
    window: Cell<u64>,
    /// Offset of the previous read, and where its prefetch ended.
    last_offset: Cell<u64>,
    last_end: Cell<u64>,
}

impl ReadaheadConnection {
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

impl FilterConnection for ReadaheadConnection {
    /// As nbdkit's readahead.c: prefetching needs a layer below that caches natively and
    /// can serve the prefetch beside the reads (parallel); otherwise the filter says so once
    /// per connection and does nothing.
    fn prepare(&self, next: &Next) -> Result<()> {
        self.size.set(next.get_size()?);
        let native = next.capabilities()?.can_cache == CacheMode::Native;
        let parallel = next::get_thread_model() == ThreadModel::Parallel;
        if !(native && parallel) {
            nbdbox_filter_sdk::log_error(
                "the layer below does not support NBD_CMD_CACHE or the parallel thread model, so this filter won't do anything",
            );
        }
        self.enabled.set(native && parallel);
        Ok(())
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let start = offset + u64::from(count);
        if self.enabled.get() && start < self.size.get() {
            let window = self.advance_window(offset).min(self.size.get() - start);
            self.last_end.set(start + window);
            // Queued before the read, as nbdkit does (readahead.c): the layer below starts on
            // the prefetch while this read is served, so the next read finds it under way.
            // A hint on a host thread, which cannot fail the read.
            next.cache_in_background(window, start);
        }
        next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.reset();
        next.pwrite(src, count, offset, flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.reset();
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.reset();
        next.zero(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Readahead);
