//! memory: a sparse RAM disk, as nbdkit-memory-plugin(1) with the sparse allocator.
//!
//! One instance serves every connection (shared-state), so the disk lives in a global here.
//! Writes that would push the instance past the host's memory limit fail with ENOSPC instead
//! of trapping; trim and zero give pages back.

mod sparse;

use std::cell::RefCell;

use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
use nbdbox_sdk::{
    config_key, error, unknown_key, BlockSize, CacheMode, Capabilities, CmdFlags, ConfigKind, Errno, Error, Export,
    Extent, ExtentFlags, FuaMode, PluginInfo, ReadBuf, Result, ThreadModel, WriteBuf, ZeroMode,
};
use sparse::{Chunk, Kind, Sparse, WriteError, PAGE_COST};

struct State {
    size: Option<u64>,
    disk: Sparse,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { size: None, disk: Sparse::new(0) })
    };
}

/// wasm32 linear memory cannot exceed 4 GiB whatever the host allows.
const WASM32_MAX_MEMORY: u64 = 4 << 30;

/// How many pages fit in the host's memory limit, keeping headroom for the stack, the
/// allocator's own growth and per-request buffers.
fn page_budget() -> u64 {
    let limit = nbdbox_sdk::memory_limit().min(WASM32_MAX_MEMORY);
    let headroom = (16u64 << 20).min(limit / 8);
    limit.saturating_sub(headroom).saturating_sub(memory_in_use()) / PAGE_COST
}

#[cfg(target_arch = "wasm32")]
fn memory_in_use() -> u64 {
    core::arch::wasm32::memory_size(0) as u64 * 65536
}

#[cfg(not(target_arch = "wasm32"))]
fn memory_in_use() -> u64 {
    0
}

fn enospc() -> Error {
    error(
        Errno::Enospc,
        "memory: out of memory (the instance's memory limit is reached)",
    )
}

struct Memory;

impl Guest for Memory {
    type Connection = MemoryConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "memory".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "A sparse RAM disk shared by all connections".into(),
            magic_config_key: Some("size".into()),
            config_keys: vec![config_key(
                "size",
                ConfigKind::Size,
                "[size=]<SIZE>  Size of the RAM disk (required).",
            )],
            thread_model: ThreadModel::Parallel,
            shared_state: true,
        }
    }

    fn config(key: String, value: String) -> Result<()> {
        match key.as_str() {
            "size" => {
                let size = nbdbox_sdk::parse_size(&key, &value)?;
                STATE.with_borrow_mut(|s| s.size = Some(size));
                Ok(())
            }
            _ => Err(unknown_key(&key)),
        }
    }

    fn config_complete() -> Result<()> {
        STATE.with_borrow_mut(|s| {
            if s.size.is_none() {
                return Err(error(Errno::Einval, "you must specify size=<SIZE> on the command line"));
            }
            s.disk = Sparse::new(page_budget());
            Ok(())
        })
    }

    fn get_ready() -> Result<()> {
        Ok(())
    }

    fn list_exports(_readonly: bool) -> Result<Vec<Export>> {
        Ok(Vec::new())
    }
}

struct MemoryConnection {
    readonly: bool,
}

impl GuestConnection for MemoryConnection {
    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    fn finalize(&self) -> Result<()> {
        Ok(())
    }

    fn open(readonly: bool, _export_name: String) -> Result<Connection> {
        Ok(Connection::new(MemoryConnection { readonly }))
    }

    fn get_size(&self) -> Result<u64> {
        STATE
            .with_borrow(|s| s.size)
            .ok_or_else(|| error(Errno::Einval, "memory: size is not configured"))
    }

    fn export_description(&self) -> Option<String> {
        None
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let writable = !self.readonly;
        Ok(Capabilities {
            can_write: writable,
            can_flush: true,
            is_rotational: false,
            can_trim: writable,
            can_zero: if writable { ZeroMode::Native } else { ZeroMode::None },
            can_fast_zero: writable,
            can_extents: true,
            can_fua: if writable { FuaMode::Native } else { FuaMode::None },
            can_multi_conn: true,
            can_cache: CacheMode::Native,
        })
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(None)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        STATE.with_borrow(|s| {
            let mut at = 0u32;
            s.disk.read(offset, count, |chunk| match chunk {
                Chunk::Zero(n) => {
                    dst.zero(at, n);
                    at += n;
                }
                Chunk::Data(bytes) => {
                    dst.write(at, bytes);
                    at += bytes.len() as u32;
                }
            });
        });
        Ok(())
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        STATE.with_borrow_mut(|s| {
            // One host read per page chunk: no transient copy of the whole request.
            s.disk
                .write(offset, count, |at, page| {
                    let data = src.read(at, page.len() as u32);
                    if data.len() != page.len() {
                        return Err(error(Errno::Eio, "memory: short read from write buffer"));
                    }
                    page.copy_from_slice(&data);
                    Ok(())
                })
                .map_err(|e| match e {
                    WriteError::NoSpace => enospc(),
                    WriteError::Source(e) => e,
                })
        })
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        STATE.with_borrow_mut(|s| s.disk.zero(offset, u64::from(count)));
        Ok(())
    }

    fn zero(&self, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        STATE.with_borrow_mut(|s| s.disk.zero(offset, u64::from(count)));
        Ok(())
    }

    fn extents(&self, count: u32, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let req_one = flags.contains(CmdFlags::REQ_ONE);
        let spans = STATE.with_borrow(|s| s.disk.extents(offset, u64::from(count), req_one));
        Ok(spans
            .into_iter()
            .map(|(offset, length, kind)| Extent {
                offset,
                length,
                flags: match kind {
                    Kind::Hole => ExtentFlags::HOLE | ExtentFlags::ZERO,
                    Kind::Zero => ExtentFlags::ZERO,
                    Kind::Data => ExtentFlags::empty(),
                },
            })
            .collect())
    }

    fn cache(&self, _count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }
}

nbdbox_sdk::export_plugin!(Memory);
