//! partition: serve partition N of an MBR or GPT partitioned disk that the layer below holds
//! (nbdkit's filters/partition/partition.c, like `qemu-nbd -P`). Primary (1-4) and logical
//! (5 and up, through the EBR chain) MBR partitions and GPT partitions; 512-byte sectors, or
//! 4096-byte ones: a GPT header says which by being at LBA 1 of either, and an MBR is read
//! with 4096-byte sectors when the layer below's minimum block size is 4096.
//!
//! State: per connection (the partition's place, found at prepare, as nbdkit does).

mod table;

use filter_blocks::{read_below, Shifted, Window};
use nbdbox_filter_sdk::debug;
use nbdbox_filter_sdk::prelude::*;
use table::TableError;

#[derive(Default)]
struct Partition {
    number: Option<u32>,
}

impl Filter for Partition {
    const NAME: &'static str = "partition";
    const DESCRIPTION: &'static str = "nbdkit partition filter";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "partition",
        Kind::Text,
        "(required) The partition number (counting from 1)",
    )];
    type Connection = Shifted;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        match value.parse::<u32>() {
            Ok(n) if n >= 1 => {
                self.number = Some(n);
                Ok(())
            }
            _ => Err(error(Errno::Einval, format!("invalid partition number: {value}"))),
        }
    }

    fn config_complete(&mut self) -> Result<()> {
        if self.number.is_none() {
            return Err(error(
                Errno::Einval,
                "you must supply the partition parameter on the command line",
            ));
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Shifted> {
        let number = self.number.unwrap_or(1);
        Ok(Shifted::new(Box::new(move |next| locate(next, number))))
    }
}

fn locate(next: &Next, number: u32) -> Result<Window> {
    let size = next.get_size()?;
    let mbr_sector = match next.block_size()? {
        Some(b) if b.minimum == 4096 => 4096,
        _ => 512,
    };
    let read = |offset, len: u64| read_below(next, offset, len as u32);
    let found = table::find(number, size, mbr_sector, read).map_err(|e| match e {
        TableError::Read(e) => e,
        TableError::Bad(why) => error(Errno::Einval, why),
    })?;
    debug(&format!("partition offset={} range={}", found.offset, found.len));
    Ok(Window {
        start: found.offset,
        len: found.len,
    })
}

nbdbox_filter_sdk::filter!(Partition);
