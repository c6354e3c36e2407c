//! hostile: a test plugin that misbehaves on purpose, to check that the host survives a
//! component that traps, spins, eats memory or writes out of bounds. Not shipped.
//!
//! It is a zero-filled disk (1 MiB unless `size=` says otherwise; writes are accepted and
//! dropped). A read *starting* at one of these offsets misbehaves; every other read returns
//! zeros:
//!
//! | offset | behaviour                                                    |
//! |--------|--------------------------------------------------------------|
//! | 4096   | traps (`unreachable`)                                        |
//! | 8192   | loops forever                                                |
//! | 12288  | allocates 16 MiB blocks without bound until memory runs out |
//! | 16384  | writes 512 bytes straddling the end of the read buffer       |

use std::hint::black_box;
use std::sync::Mutex;

use nbdbox_sdk::debug;
use nbdbox_sdk::prelude::*;

pub const TRAP_AT: u64 = 4096;
pub const SPIN_AT: u64 = 8192;
pub const HOG_AT: u64 = 12288;
pub const OVERRUN_AT: u64 = 16384;

/// Where the memory hog keeps its blocks, so the allocations stay live.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[derive(Default)]
struct Hostile {
    size: Option<u64>,
}

impl Plugin for Hostile {
    const NAME: &'static str = "hostile";
    const DESCRIPTION: &'static str = "Test plugin: misbehaves on reads at chosen offsets";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[Key::new("size", Kind::Size, "[size=]<SIZE>  Disk size (default 1M).")];
    type Connection = HostileConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        self.size = Some(nbdbox_sdk::parse_size(key, value)?);
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<HostileConnection> {
        Ok(HostileConnection {
            size: self.size.unwrap_or(1 << 20),
        })
    }
}

struct HostileConnection {
    size: u64,
}

#[nbdbox_sdk::connection]
impl Connection for HostileConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    /// Writes and flushes are accepted (and dropped); zero is the host's, by writing; cache is
    /// the host's, by reading.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_fast_zero: false,
            can_cache: CacheMode::Emulate,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        match offset {
            TRAP_AT => {
                debug("trapping");
                // A trap, as wasm's `unreachable`.
                std::process::abort()
            }
            SPIN_AT => {
                debug("spinning forever");
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            HOG_AT => {
                debug("allocating memory without bound");
                let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    hoard.push(black_box(vec![0xa5u8; 16 << 20]));
                }
            }
            OVERRUN_AT => {
                debug("writing past the end of the read buffer");
                let len = dst.len();
                dst.write(len.saturating_sub(256), &[0xee; 512]);
                Ok(())
            }
            _ => {
                dst.zero(0, count);
                Ok(())
            }
        }
    }

    fn pwrite(&self, _src: &WriteBuf, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }
}

nbdbox_sdk::plugin!(Hostile);
