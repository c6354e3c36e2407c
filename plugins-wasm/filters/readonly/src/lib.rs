//! readonly: make the export read-only, always or while a file exists (nbdkit's readonly
//! filter, nbdkit ≥ 1.38). Without `readonly-file` it is nbdkit's `-r`: the layer below is
//! opened read-only and nothing write-like is advertised. With `readonly-file=PATH` (a
//! trigger-file grant: the host only tests whether PATH exists) the export stays writable,
//! and every write, trim and zero fails with EPERM while PATH exists.
//!
//! State: none; the file is looked at on each write.

use nbdbox_filter_sdk::grants;
use nbdbox_filter_sdk::prelude::*;

const READONLY_FILE: &str = "readonly-file";

#[derive(Default, Clone, Copy)]
struct Readonly {
    /// `readonly-file` was given.
    switchable: bool,
}

impl Filter for Readonly {
    const NAME: &'static str = "readonly";
    const DESCRIPTION: &'static str = "switch a plugin between read-only and writable";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        READONLY_FILE,
        Kind::TriggerFile,
        "Make the plugin read-only while this file exists",
    )];
    type Connection = Readonly;

    fn config(&mut self, _key: &str, _value: &str) -> Result<()> {
        self.switchable = true;
        Ok(())
    }

    fn open_next(&self, readonly: bool, export_name: &str) -> Result<next::Connection> {
        next::Connection::open(readonly || !self.switchable, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Readonly> {
        Ok(*self)
    }
}

impl Readonly {
    fn check(&self) -> Result<()> {
        if grants::exists(READONLY_FILE)? {
            return Err(error(
                Errno::Eperm,
                "readonly: the export is read-only (readonly-file exists)",
            ));
        }
        Ok(())
    }
}

impl FilterConnection for Readonly {
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        if self.switchable {
            return Ok(below);
        }
        Ok(below.read_only())
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check()?;
        next.pwrite(src, count, offset, flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check()?;
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check()?;
        next.zero(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Readonly);
