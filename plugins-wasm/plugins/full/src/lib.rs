//! full: nbdkit-full-plugin(1), a disk that has run out of space. Reads are zeros; writes and
//! trims fail with ENOSPC. Like nbdkit's full.c it has no zero callback, so the host emulates
//! zero by writing (ENOSPC too) and refuses a fast zero at once (ENOTSUP). `[size=]SIZE` is
//! required.

use nbdbox_sdk::prelude::*;

#[derive(Default)]
struct Full {
    size: Option<u64>,
}

impl Plugin for Full {
    const NAME: &'static str = "full";
    const DESCRIPTION: &'static str = "A disk that is always full: writes fail with ENOSPC";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "size",
        Kind::Size,
        "[size=]<SIZE>  (required) Size of the backing disk.",
    )];
    type Connection = FullDisk;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        self.size = Some(nbdbox_sdk::parse_size(key, value)?);
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        match self.size {
            Some(_) => Ok(()),
            None => Err(error(Errno::Einval, "size parameter is required")),
        }
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<FullDisk> {
        Ok(FullDisk {
            size: self.size.unwrap_or_default(),
        })
    }
}

struct FullDisk {
    size: u64,
}

fn enospc() -> Error {
    errno(Errno::Enospc)
}

#[nbdbox_sdk::connection]
impl Connection for FullDisk {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_multi_conn: true,
            can_cache: CacheMode::Native,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        dst.zero(0, count);
        Ok(())
    }

    fn pwrite(&self, _src: &WriteBuf, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(enospc())
    }

    fn trim(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(enospc())
    }

    /// Nothing was ever written: the whole disk is one hole.
    fn extents(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset: 0,
            length: self.size,
            flags: ExtentFlags::HOLE | ExtentFlags::ZERO,
        }])
    }
}

nbdbox_sdk::plugin!(Full);
