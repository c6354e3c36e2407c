//! zero: nbdkit-zero-plugin(1), a disk of length zero for testing corner cases. It takes no
//! parameters; as in nbdkit's zero.c it is read-only, multi-conn and caches natively (its
//! size leaves no request for it to serve).

use nbdbox_sdk::prelude::*;

#[derive(Default)]
struct Zero;

impl Plugin for Zero {
    const NAME: &'static str = "zero";
    const DESCRIPTION: &'static str = "A disk of length zero";
    type Connection = Empty;

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<Empty> {
        Ok(Empty)
    }
}

struct Empty;

#[nbdbox_sdk::connection]
impl Connection for Empty {
    fn get_size(&self) -> Result<u64> {
        Ok(0)
    }

    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_multi_conn: true,
            can_cache: CacheMode::Native,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    /// The host refuses every read of a zero-length disk before it gets here.
    fn pread(&self, _dst: &ReadBuf, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(error(Errno::Eio, "unexpected call to pread"))
    }
}

nbdbox_sdk::plugin!(Zero);
