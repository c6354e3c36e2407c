//! recorder (test only): a pass-through filter that logs every call it handles, at the
//! moment it does its own part, as `recorder NAME: CALL`. Stack several to check the order
//! calls reach each layer (nbdkit's test-layers idea). Each instance takes the first
//! `recorder=NAME` key it sees and passes later ones down, so
//! `--filter=R --filter=R --filter=R PLUGIN recorder=f3 recorder=f2 recorder=f1` names them
//! from the outside in.

use nbdbox_filter_sdk::filter::{Connection, Guest, GuestConnection};
use nbdbox_filter_sdk::{
    forward_globals, info, next, BlockSize, Capabilities, CmdFlags, Extent, PluginInfo, ReadBuf, Result, ThreadModel,
    WriteBuf,
};
use std::cell::RefCell;

thread_local! {
    static NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn record(call: &str) {
    let name = NAME.with(|n| n.borrow().clone().unwrap_or_else(|| "?".into()));
    info(&format!("recorder {name}: {call}"));
}

struct Recorder;

struct RecorderConnection {
    next: next::Connection,
}

impl Guest for Recorder {
    type Connection = RecorderConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "recorder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test filter: log every call".into(),
            magic_config_key: None,
            config_keys: Vec::new(),
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        let unnamed = NAME.with(|n| n.borrow().is_none());
        if key == "recorder" && unnamed {
            NAME.with(|n| *n.borrow_mut() = Some(value));
            return Ok(());
        }
        next::config(&key, &value)
    }

    fn config_complete() -> Result<()> {
        record("config-complete");
        next::config_complete()
    }

    fn get_ready() -> Result<()> {
        next::get_ready()?;
        record("get-ready");
        Ok(())
    }

    forward_globals!(list_exports);
}

impl GuestConnection for RecorderConnection {
    fn open(readonly: bool, export_name: String) -> Result<Connection> {
        let next = next::Connection::open(readonly, &export_name)?;
        record("open");
        Ok(Connection::new(RecorderConnection { next }))
    }

    fn prepare(&self) -> Result<()> {
        self.next.prepare()?;
        record("prepare");
        Ok(())
    }

    fn finalize(&self) -> Result<()> {
        record("finalize");
        self.next.finalize()
    }

    fn get_size(&self) -> Result<u64> {
        record("get-size");
        self.next.get_size()
    }

    fn export_description(&self) -> Option<String> {
        self.next.export_description()
    }

    fn capabilities(&self) -> Result<Capabilities> {
        record("capabilities");
        self.next.capabilities()
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        self.next.block_size()
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        record(&format!("pread count={count} offset={offset}"));
        self.next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        record(&format!("pwrite count={count} offset={offset}"));
        self.next.pwrite(src, count, offset, flags)
    }

    fn flush(&self, flags: CmdFlags) -> Result<()> {
        record("flush");
        self.next.flush(flags)
    }

    fn trim(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        record(&format!("trim count={count} offset={offset}"));
        self.next.trim(count, offset, flags)
    }

    fn zero(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        record(&format!("zero count={count} offset={offset}"));
        self.next.zero(count, offset, flags)
    }

    fn extents(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        record(&format!("extents count={count} offset={offset}"));
        self.next.extents(count, offset, flags)
    }

    fn cache(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        record(&format!("cache count={count} offset={offset}"));
        self.next.cache(count, offset, flags)
    }
}

impl Drop for RecorderConnection {
    fn drop(&mut self) {
        // The layer below is closed after this, when `next` is dropped.
        record("close");
    }
}

nbdbox_filter_sdk::export_filter!(Recorder);
