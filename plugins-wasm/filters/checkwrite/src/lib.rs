//! checkwrite: turn every write into a check that the layer below already holds what is
//! written (nbdkit's filters/checkwrite/checkwrite.c), for testing copying tools: copy from
//! and to the same export and every write must match. The layer below is opened read-only
//! and never written. A write matches when the bytes are equal; a trim or zero when the
//! range reads as zeroes (ranges the layer below reports as zero are not read). A mismatch
//! fails with EIO.
//!
//! State: none.

use filter_blocks::read_below;
use nbdbox_filter_sdk::log_error;
use nbdbox_filter_sdk::prelude::*;

/// The most bytes compared in one read.
const CHUNK: u64 = 4 << 20;

#[derive(Default)]
struct Checkwrite;

impl Filter for Checkwrite {
    const NAME: &'static str = "checkwrite";
    const DESCRIPTION: &'static str = "nbdkit checkwrite filter";
    type Connection = CheckwriteConnection;

    fn open_next(&self, _readonly: bool, export_name: &str) -> Result<next::Connection> {
        next::Connection::open(true, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<CheckwriteConnection> {
        Ok(CheckwriteConnection)
    }
}

struct CheckwriteConnection;

fn mismatch(what: &str, offset: u64) -> Error {
    log_error(&format!(
        "checkwrite: {what} does not match the plugin at offset {offset}"
    ));
    errno(Errno::Eio)
}

impl CheckwriteConnection {
    /// Check that `[offset, offset + count)` reads as zeroes below.
    fn check_zero(&self, next: &Next, what: &str, count: u64, offset: u64) -> Result<()> {
        let end = offset + count;
        let mut at = offset;
        while at < end {
            let extents = next.extents(end - at, at, CmdFlags::empty())?;
            for e in extents {
                let (start, stop) = (e.offset.max(at), (e.offset + e.length).min(end));
                if e.flags.contains(ExtentFlags::ZERO) {
                    at = stop;
                    continue;
                }
                let mut pos = start;
                while pos < stop {
                    let len = (stop - pos).min(CHUNK);
                    if read_below(next, pos, len as u32)?.iter().any(|&b| b != 0) {
                        return Err(mismatch(what, pos));
                    }
                    pos += len;
                }
                at = stop;
            }
        }
        Ok(())
    }
}

impl FilterConnection for CheckwriteConnection {
    /// Writable whatever the layer below is; nothing is ever written, so flush and FUA are
    /// trivially done, and connections agree.
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        Ok(Capabilities {
            can_write: true,
            can_flush: true,
            can_trim: true,
            can_zero: ZeroMode::Native,
            can_fast_zero: true,
            can_fua: FuaMode::Native,
            can_multi_conn: true,
            ..below
        })
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let mut at = 0;
        while at < count {
            let len = (count - at).min(CHUNK as u32);
            if read_below(next, offset + u64::from(at), len)? != src.read(at, len) {
                return Err(mismatch("pwrite", offset + u64::from(at)));
            }
            at += len;
        }
        Ok(())
    }

    fn flush(&self, _next: &Next, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.check_zero(next, "trim", count, offset)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.check_zero(next, "zero", count, offset)
    }
}

nbdbox_filter_sdk::filter!(Checkwrite);
