//! faulty (test only): a pass-through filter that injects failures into reads and writes.
//! `fail-first=N`: the first N data calls fail with EIO. `fail-percent=P`: then P% of data
//! calls fail (deterministic sequence). `fail-opens=N`: the first N opens fail.
//! `trap-offset=O`: a read starting at O traps. Counters are per instance; it declares
//! shared state, so one instance counts for the whole server.

use nbdbox_filter_sdk::filter::{Connection, Guest, GuestConnection};
use nbdbox_filter_sdk::{
    error, forward, forward_globals, info, next, CmdFlags, Errno, PluginInfo, ReadBuf, Result, ThreadModel, WriteBuf,
};
use std::cell::Cell;

thread_local! {
    static FAIL_FIRST: Cell<u64> = const { Cell::new(0) };
    static FAIL_PERCENT: Cell<u64> = const { Cell::new(0) };
    static FAIL_OPENS: Cell<u64> = const { Cell::new(0) };
    static TRAP_OFFSET: Cell<Option<u64>> = const { Cell::new(None) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static OPENS: Cell<u64> = const { Cell::new(0) };
}

fn number(key: &str, value: &str) -> Result<u64> {
    value
        .parse()
        .map_err(|_| error(Errno::Einval, format!("{key}: '{value}' is not a number")))
}

/// Count a data call and decide whether it fails.
fn inject(call: &str) -> Result<()> {
    let n = CALLS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let percent = FAIL_PERCENT.with(Cell::get);
    // A fixed pseudo-random sequence: the same calls fail on every run.
    let unlucky = percent > 0 && (n.wrapping_mul(2654435761) >> 7) % 100 < percent;
    if n <= FAIL_FIRST.with(Cell::get) || unlucky {
        info(&format!("failing {call} #{n}"));
        return Err(error(Errno::Eio, format!("faulty: injected failure of {call} #{n}")));
    }
    Ok(())
}

struct Faulty;

struct FaultyConnection {
    next: next::Connection,
}

impl Guest for Faulty {
    type Connection = FaultyConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "faulty".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test filter: inject failures".into(),
            magic_config_key: None,
            config_keys: Vec::new(),
            thread_model: ThreadModel::Parallel,
            shared_state: true,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        match key.as_str() {
            "fail-first" => FAIL_FIRST.with(|c| number(&key, &value).map(|n| c.set(n))),
            "fail-percent" => FAIL_PERCENT.with(|c| number(&key, &value).map(|n| c.set(n))),
            "fail-opens" => FAIL_OPENS.with(|c| number(&key, &value).map(|n| c.set(n))),
            "trap-offset" => TRAP_OFFSET.with(|c| number(&key, &value).map(|n| c.set(Some(n)))),
            _ => next::config(&key, &value),
        }
    }

    forward_globals!(config_complete, get_ready, list_exports);
}

impl FaultyConnection {
    fn next(&self) -> &next::Connection {
        &self.next
    }
}

impl GuestConnection for FaultyConnection {
    fn open(readonly: bool, export_name: String) -> Result<Connection> {
        let n = OPENS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        info(&format!("open #{n}"));
        if n <= FAIL_OPENS.with(Cell::get) {
            return Err(error(Errno::Eio, format!("faulty: injected failure of open #{n}")));
        }
        let next = next::Connection::open(readonly, &export_name)?;
        Ok(Connection::new(FaultyConnection { next }))
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        if TRAP_OFFSET.with(Cell::get) == Some(offset) {
            core::arch::wasm32::unreachable();
        }
        inject("pread")?;
        self.next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        inject("pwrite")?;
        self.next.pwrite(src, count, offset, flags)
    }

    forward!(next; prepare, finalize, get_size, export_description, capabilities, block_size,
        flush, trim, zero, extents, cache);
}

nbdbox_filter_sdk::export_filter!(Faulty);
