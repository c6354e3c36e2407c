//! null: nbdkit-null-plugin(1). Reads are zeros, writes are thrown away, every call nbdkit's
//! null.c supports succeeds at once; `[size=]SIZE` defaults to 0, as nbdkit's.

use constant_disk::ConstantDisk;
use nbdbox_sdk::prelude::*;

#[derive(Default)]
struct Null {
    size: u64,
}

impl Plugin for Null {
    const NAME: &'static str = "null";
    const DESCRIPTION: &'static str = "A bitbucket: reads zeros, discards writes";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "size",
        Kind::Size,
        "[size=]<SIZE>  Size of the backing disk (default 0).",
    )];
    type Connection = ConstantDisk;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        self.size = nbdbox_sdk::parse_size(key, value)?;
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<ConstantDisk> {
        Ok(ConstantDisk::new(self.size, 0, ExtentFlags::HOLE | ExtentFlags::ZERO))
    }
}

nbdbox_sdk::plugin!(Null);
