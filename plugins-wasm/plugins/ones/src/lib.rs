//! ones: nbdkit-ones-plugin(1) (nbdkit ≥ 1.36's plugins/ones/ones.c). Reads are `byte=`
//! (default 0xff) repeated, writes are thrown away, block status is one data extent;
//! `[size=]SIZE` defaults to 0.

use constant_disk::ConstantDisk;
use nbdbox_sdk::prelude::*;

struct Ones {
    size: u64,
    byte: u8,
}

impl Default for Ones {
    fn default() -> Self {
        Ones { size: 0, byte: 0xff }
    }
}

impl Plugin for Ones {
    const NAME: &'static str = "ones";
    const DESCRIPTION: &'static str = "Reads a repeated byte (0xff by default), discards writes";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "size",
            Kind::Size,
            "[size=]<SIZE>  Size of the backing disk (default 0).",
        ),
        Key::new("byte", Kind::Text, "byte=<BYTE>  Repeating byte to use (default 0xff)."),
    ];
    type Connection = ConstantDisk;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "size" => self.size = nbdbox_sdk::parse_size(key, value)?,
            _ => self.byte = nbdkit_parse::parse_u8(key, value).map_err(|why| error(Errno::Einval, why))?,
        }
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<ConstantDisk> {
        Ok(ConstantDisk::new(self.size, self.byte, ExtentFlags::empty()))
    }
}

nbdbox_sdk::plugin!(Ones);
