//! protect: write-protect byte ranges of the layer below (nbdkit's
//! filters/protect/protect.c). `protect=START-END` (inclusive; repeatable) and
//! `protect=~START-END` (everything else). A write into a protected range is allowed only if
//! it leaves the bytes there as they are; a trim or zero only if they already read as zero.
//! Otherwise the request fails with EPERM and nothing is written.
//!
//! State: none beyond the ranges.

mod ranges;

use filter_blocks::read_below;
use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{debug, log_error};
use ranges::Ranges;
use std::rc::Rc;

#[derive(Default)]
struct Protect {
    ranges: Rc<Ranges>,
}

impl Filter for Protect {
    const NAME: &'static str = "protect";
    const DESCRIPTION: &'static str = "nbdkit protect filter";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "protect",
        Kind::Text,
        "Protect range of bytes START-END (inclusive)",
    )];
    type Connection = ProtectConnection;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        let parsed = ranges::parse(value).map_err(|why| error(Errno::Einval, why))?;
        Rc::get_mut(&mut self.ranges)
            .expect("configured before any connection")
            .add(parsed);
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<ProtectConnection> {
        Ok(ProtectConnection {
            ranges: self.ranges.clone(),
        })
    }
}

struct ProtectConnection {
    ranges: Rc<Ranges>,
}

/// The most bytes compared in one read.
const CHUNK: u64 = 4 << 20;

impl ProtectConnection {
    /// Fail unless every protected byte of `[offset, offset + count)` would stay as it is:
    /// `new(at, len)` gives the bytes to be written there (relative to `offset`), or None
    /// for zeroes.
    fn check(&self, next: &Next, count: u64, offset: u64, new: impl Fn(u64, u64) -> Option<Vec<u8>>) -> Result<()> {
        for (start, end) in self.ranges.within(offset, count) {
            let mut at = start;
            while at < end {
                let len = (end - at).min(CHUNK);
                let old = read_below(next, at, len as u32)?;
                let same = match new(at - offset, len) {
                    Some(bytes) => bytes == old,
                    None => old.iter().all(|&b| b == 0),
                };
                if !same {
                    log_error(&format!(
                        "protect filter prevented write to protected range {start}-{}",
                        end - 1
                    ));
                    return Err(errno(Errno::Eperm));
                }
                at += len;
            }
            debug(&format!("protect: range {start}-{} unchanged", end - 1));
        }
        Ok(())
    }
}

impl FilterConnection for ProtectConnection {
    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check(next, u64::from(count), offset, |at, len| {
            Some(src.read(at as u32, len as u32))
        })?;
        next.pwrite(src, count, offset, flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check(next, count, offset, |_, _| None)?;
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check(next, count, offset, |_, _| None)?;
        next.zero(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Protect);
