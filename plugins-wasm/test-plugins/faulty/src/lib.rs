//! faulty (test only): a pass-through filter that injects failures into reads and writes.
//! `fail-first=N`: the first N data calls fail with EIO. `fail-percent=P`: then P% of data
//! calls fail (deterministic sequence). `fail-opens=N`: the first N opens fail.
//! `trap-offset=O`: a read starting at O traps. Opens and data calls are counted in host
//! counters, which every instance of the filter shares: the counts are the whole server's,
//! and the filter needs no shared state (a trap costs only its own instance).

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{counter_add, info};

fn number(key: &str, value: &str) -> Result<u64> {
    value
        .parse()
        .map_err(|_| error(Errno::Einval, format!("{key}: '{value}' is not a number")))
}

#[derive(Clone, Copy, Default)]
struct Faults {
    fail_first: u64,
    fail_percent: u64,
    fail_opens: u64,
    trap_offset: Option<u64>,
}

#[derive(Default)]
struct Faulty {
    faults: Faults,
}

impl Filter for Faulty {
    const NAME: &'static str = "faulty";
    const DESCRIPTION: &'static str = "Test filter: inject failures";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("fail-first", Kind::Text, "fail-first=N  The first N data calls fail."),
        Key::new(
            "fail-percent",
            Kind::Text,
            "fail-percent=P  Then P% of data calls fail.",
        ),
        Key::new("fail-opens", Kind::Text, "fail-opens=N  The first N opens fail."),
        Key::new("trap-offset", Kind::Text, "trap-offset=O  A read starting at O traps."),
    ];
    type Connection = FaultyConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let n = number(key, value)?;
        match key {
            "fail-first" => self.faults.fail_first = n,
            "fail-percent" => self.faults.fail_percent = n,
            "fail-opens" => self.faults.fail_opens = n,
            _ => self.faults.trap_offset = Some(n),
        }
        Ok(())
    }

    /// Counted and failed before the layer below is opened.
    fn open_next(&self, readonly: bool, export_name: &str) -> Result<next::Connection> {
        let n = counter_add("opens", 1) as u64;
        info(&format!("open #{n}"));
        if n <= self.faults.fail_opens {
            return Err(error(Errno::Eio, format!("faulty: injected failure of open #{n}")));
        }
        next::Connection::open(readonly, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<FaultyConnection> {
        Ok(FaultyConnection { faults: self.faults })
    }
}

struct FaultyConnection {
    faults: Faults,
}

impl FaultyConnection {
    /// Count a data call and decide whether it fails.
    fn inject(&self, call: &str) -> Result<()> {
        let n = counter_add("calls", 1) as u64;
        let percent = self.faults.fail_percent;
        // A fixed pseudo-random sequence: the same calls fail on every run.
        let unlucky = percent > 0 && (n.wrapping_mul(2654435761) >> 7) % 100 < percent;
        if n <= self.faults.fail_first || unlucky {
            info(&format!("failing {call} #{n}"));
            return Err(error(Errno::Eio, format!("faulty: injected failure of {call} #{n}")));
        }
        Ok(())
    }
}

impl FilterConnection for FaultyConnection {
    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        if self.faults.trap_offset == Some(offset) {
            // A trap, as wasm's `unreachable`: the host must contain it.
            std::process::abort();
        }
        self.inject("pread")?;
        next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.inject("pwrite")?;
        next.pwrite(src, count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Faulty);
