//! recorder (test only): a pass-through filter that logs every call it handles, at the
//! moment it does its own part, as `recorder NAME: CALL`. Stack several to check the order
//! calls reach each layer (nbdkit's test-layers idea). Each instance takes the first
//! `recorder=NAME` key it sees and passes later ones down, so
//! `--filter=R --filter=R --filter=R PLUGIN recorder=f3 recorder=f2 recorder=f1` names them
//! from the outside in.

use nbdbox_filter_sdk::info;
use nbdbox_filter_sdk::prelude::*;

fn record(name: &str, call: &str) {
    info(&format!("recorder {name}: {call}"));
}

#[derive(Default)]
struct Recorder {
    name: Option<String>,
}

impl Recorder {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("?")
    }
}

impl Filter for Recorder {
    const NAME: &'static str = "recorder";
    const DESCRIPTION: &'static str = "Test filter: log every call";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "recorder",
        Kind::Text,
        "recorder=NAME  This instance's name (the first one given; later ones pass down).",
    )];
    type Connection = RecorderConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        if self.name.is_some() {
            return next::config(key, value);
        }
        self.name = Some(value.into());
        Ok(())
    }

    /// The adapter then calls the layer below's.
    fn config_complete(&mut self) -> Result<()> {
        record(self.name(), "config-complete");
        Ok(())
    }

    /// The host has called the layers below first.
    fn get_ready(&mut self) -> Result<()> {
        record(self.name(), "get-ready");
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<RecorderConnection> {
        record(self.name(), "open");
        Ok(RecorderConnection {
            name: self.name().into(),
        })
    }
}

struct RecorderConnection {
    name: String,
}

impl RecorderConnection {
    fn record(&self, call: &str) {
        record(&self.name, call);
    }
}

impl FilterConnection for RecorderConnection {
    fn prepare(&self, _next: &Next) -> Result<()> {
        self.record("prepare");
        Ok(())
    }

    fn finalize(&self, _next: &Next) -> Result<()> {
        self.record("finalize");
        Ok(())
    }

    fn get_size(&self, next: &Next) -> Result<u64> {
        self.record("get-size");
        next.get_size()
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        self.record("capabilities");
        next.capabilities()
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(&format!("pread count={count} offset={offset}"));
        next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(&format!("pwrite count={count} offset={offset}"));
        next.pwrite(src, count, offset, flags)
    }

    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        self.record("flush");
        next.flush(flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(&format!("trim count={count} offset={offset}"));
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(&format!("zero count={count} offset={offset}"));
        next.zero(count, offset, flags)
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.record(&format!("extents count={count} offset={offset}"));
        next.extents(count, offset, flags)
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(&format!("cache count={count} offset={offset}"));
        next.cache(count, offset, flags)
    }
}

impl Drop for RecorderConnection {
    fn drop(&mut self) {
        // The layer below is closed after this.
        self.record("close");
    }
}

nbdbox_filter_sdk::filter!(Recorder);
