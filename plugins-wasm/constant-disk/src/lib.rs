//! A disk whose every byte is the same and which throws writes away: nbdkit's null plugin
//! (zeros) and ones plugin (0xff, or `byte=`). Both are nbdkit's fastest plugins and the floor
//! of the benchmarks, so every call is as cheap as it can be: a read is one host call per
//! MiB at most (one call in all for zeros), everything else returns at once.

use nbdbox_sdk::prelude::*;

/// The most bytes one `write` to a read buffer carries, so a fill never holds more than this.
const CHUNK: usize = 1 << 20;

/// One connection's view: the disk is fully described by its size, its byte and the type of
/// its one extent.
pub struct ConstantDisk {
    size: u64,
    /// None for zeros: the read buffer is zeroed by the host in one call.
    fill: Option<Vec<u8>>,
    extent: ExtentFlags,
}

impl ConstantDisk {
    /// A disk of `size` bytes of `byte`, whose block status is one extent of type `extent`.
    pub fn new(size: u64, byte: u8, extent: ExtentFlags) -> ConstantDisk {
        ConstantDisk {
            size,
            fill: (byte != 0).then(|| vec![byte; CHUNK]),
            extent,
        }
    }
}

#[nbdbox_sdk::connection]
impl Connection for ConstantDisk {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    /// nbdkit's null.c and ones.c: every connection sees the same bytes (multi-conn), nothing
    /// is ever stored so flush, FUA and fast zero are free, and cache is a native no-op.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_fast_zero: true,
            can_fua: FuaMode::Native,
            can_multi_conn: true,
            can_cache: CacheMode::Native,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        match &self.fill {
            None => dst.zero(0, count),
            Some(fill) => {
                let mut at = 0;
                while at < count {
                    let n = (count - at).min(CHUNK as u32);
                    dst.write(at, &fill[..n as usize]);
                    at += n;
                }
            }
        }
        Ok(())
    }

    fn pwrite(&self, _src: &WriteBuf, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn zero(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    /// The whole disk as one extent (the host trims it to the request).
    fn extents(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset: 0,
            length: self.size,
            flags: self.extent,
        }])
    }
}
