//! memory: a sparse RAM disk, as nbdkit-memory-plugin(1) with the sparse allocator.
//!
//! One instance serves every connection (shared state), so the disk lives in the plugin value
//! and each connection holds it by `Rc`. Writes that would push the instance past the host's
//! memory limit fail with ENOSPC instead of trapping; trim and zero give pages back.

mod sparse;

use std::cell::RefCell;
use std::rc::Rc;

use nbdbox_sdk::prelude::*;
use sparse::{Chunk, Sparse, WriteError, PAGE_COST};

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

#[derive(Default)]
struct Memory {
    size: Option<u64>,
    disk: Rc<RefCell<Sparse>>,
}

impl Plugin for Memory {
    const NAME: &'static str = "memory";
    const DESCRIPTION: &'static str = "A sparse RAM disk shared by all connections";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "size",
        Kind::Size,
        "[size=]<SIZE>  Size of the RAM disk (required).",
    )];
    const SHARED_STATE: bool = true;
    type Connection = MemoryConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        self.size = Some(nbdbox_sdk::parse_size(key, value)?);
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        if self.size.is_none() {
            return Err(error(Errno::Einval, "you must specify size=<SIZE> on the command line"));
        }
        self.disk = Rc::new(RefCell::new(Sparse::new(page_budget())));
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<MemoryConnection> {
        Ok(MemoryConnection {
            // config_complete made sure it is set.
            size: self.size.unwrap_or_default(),
            disk: Rc::clone(&self.disk),
        })
    }
}

struct MemoryConnection {
    size: u64,
    disk: Rc<RefCell<Sparse>>,
}

#[nbdbox_sdk::connection]
impl Connection for MemoryConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    /// Every connection sees the same disk (multi-conn); data is in memory the moment it is
    /// written, so FUA and fast zero cost nothing.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_fast_zero: true,
            can_fua: FuaMode::Native,
            can_multi_conn: true,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let mut at = 0u32;
        self.disk.borrow().read(offset, count, |chunk| match chunk {
            Chunk::Zero(n) => {
                dst.zero(at, n);
                at += n;
            }
            Chunk::Data(bytes) => {
                dst.write(at, bytes);
                at += bytes.len() as u32;
            }
        });
        Ok(())
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        // One host read per page chunk: no transient copy of the whole request.
        self.disk
            .borrow_mut()
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
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.disk.borrow_mut().zero(offset, count);
        Ok(())
    }

    fn zero(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.disk.borrow_mut().zero(offset, count);
        Ok(())
    }

    fn extents(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let req_one = flags.contains(CmdFlags::REQ_ONE);
        let spans = self.disk.borrow().extents(offset, count, req_one);
        Ok(spans
            .into_iter()
            .map(|(offset, length, kind)| Extent {
                offset,
                length,
                flags: match kind {
                    sparse::Kind::Hole => ExtentFlags::HOLE | ExtentFlags::ZERO,
                    sparse::Kind::Zero => ExtentFlags::ZERO,
                    sparse::Kind::Data => ExtentFlags::empty(),
                },
            })
            .collect())
    }

    /// The data is already in memory: nothing to fetch, but native, so readahead helps.
    fn cache(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }
}

nbdbox_sdk::plugin!(Memory);
