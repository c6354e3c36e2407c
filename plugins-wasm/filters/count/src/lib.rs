//! count: nbdkit-count-filter(1) (nbdkit ≥ 1.36's filters/count/count.c). It counts the bytes
//! read, written, zeroed and trimmed successfully over all connections, and at exit logs
//! `count bytes: read N, written N, zeroed N, trimmed N` as a debug message (seen with -v).
//! The totals are host counters, shared by every instance of the filter.

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{counter_add, debug};

/// The host counters, in the order the message gives them.
const READ: &str = "read";
const WRITTEN: &str = "written";
const ZEROED: &str = "zeroed";
const TRIMMED: &str = "trimmed";

#[derive(Default)]
struct Count;

impl Filter for Count {
    const NAME: &'static str = "count";
    const DESCRIPTION: &'static str = "Count bytes read, written, zeroed and trimmed";
    type Connection = Counting;

    fn cleanup(&mut self) {
        let total = |name| counter_add(name, 0);
        debug(&format!(
            "count bytes: read {}, written {}, zeroed {}, trimmed {}",
            total(READ),
            total(WRITTEN),
            total(ZEROED),
            total(TRIMMED)
        ));
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Counting> {
        Ok(Counting)
    }
}

struct Counting;

/// Add `count` to `counter` when `result` is a success, and pass it on.
fn counted<T>(counter: &str, count: u64, result: Result<T>) -> Result<T> {
    if result.is_ok() {
        counter_add(counter, count as i64);
    }
    result
}

impl FilterConnection for Counting {
    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        counted(READ, count.into(), next.pread(dst, count, offset, flags))
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        counted(WRITTEN, count.into(), next.pwrite(src, count, offset, flags))
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        counted(ZEROED, count, next.zero(count, offset, flags))
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        counted(TRIMMED, count, next.trim(count, offset, flags))
    }
}

nbdbox_filter_sdk::filter!(Count);
