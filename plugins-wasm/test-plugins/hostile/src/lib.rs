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

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Mutex;

use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
use nbdbox_sdk::{
    config_key, debug, unknown_key, BlockSize, CacheMode, Capabilities, CmdFlags, ConfigKind, Export, Extent,
    ExtentFlags, FuaMode, PluginInfo, ReadBuf, Result, ThreadModel, WriteBuf, ZeroMode,
};

pub const TRAP_AT: u64 = 4096;
pub const SPIN_AT: u64 = 8192;
pub const HOG_AT: u64 = 12288;
pub const OVERRUN_AT: u64 = 16384;

thread_local! {
    static SIZE: Cell<u64> = const { Cell::new(1 << 20) };
}

/// Where the memory hog keeps its blocks, so the allocations stay live.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    panic!("hostile: trap")
}

struct Hostile;

impl Guest for Hostile {
    type Connection = HostileConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test plugin: misbehaves on reads at chosen offsets".into(),
            magic_config_key: Some("size".into()),
            config_keys: vec![config_key(
                "size",
                ConfigKind::Size,
                "[size=]<SIZE>  Disk size (default 1M).",
            )],
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        match key.as_str() {
            "size" => {
                SIZE.set(nbdbox_sdk::parse_size(&key, &value)?);
                Ok(())
            }
            _ => Err(unknown_key(&key)),
        }
    }

    fn config_complete() -> Result<()> {
        Ok(())
    }

    fn get_ready() -> Result<()> {
        Ok(())
    }

    fn list_exports(_readonly: bool) -> Result<Vec<Export>> {
        Ok(Vec::new())
    }
}

struct HostileConnection {
    readonly: bool,
}

impl GuestConnection for HostileConnection {
    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    fn finalize(&self) -> Result<()> {
        Ok(())
    }

    fn open(readonly: bool, _export_name: String) -> Result<Connection> {
        Ok(Connection::new(HostileConnection { readonly }))
    }

    fn get_size(&self) -> Result<u64> {
        Ok(SIZE.get())
    }

    fn export_description(&self) -> Option<String> {
        None
    }

    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_write: !self.readonly,
            can_flush: !self.readonly,
            can_zero: if self.readonly {
                ZeroMode::None
            } else {
                ZeroMode::Emulate
            },
            can_fua: if self.readonly { FuaMode::None } else { FuaMode::Emulate },
            can_cache: CacheMode::Emulate,
            ..Capabilities::default()
        })
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(None)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        match offset {
            TRAP_AT => {
                debug("trapping");
                trap()
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

    fn trim(&self, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn zero(&self, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn extents(&self, count: u32, offset: u64, _flags: CmdFlags) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            length: u64::from(count),
            flags: ExtentFlags::empty(),
        }])
    }

    fn cache(&self, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }
}

nbdbox_sdk::export_plugin!(Hostile);
