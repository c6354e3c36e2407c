//! memory: a RAM disk, as nbdkit-memory-plugin(1) with its `sparse` (default) and `malloc`
//! allocators.
//!
//! One instance serves every connection (shared state), so the disk lives in the plugin value
//! and each connection holds it by `Rc`. Sparse writes that would push the instance past the
//! host's memory limit fail with ENOSPC instead of trapping; trim and zero give pages back.
//! A malloc disk is allocated whole at startup.

mod flat;
mod sparse;

use std::cell::RefCell;
use std::rc::Rc;

use flat::Flat;
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

/// nbdkit's `allocator=` values.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Allocator {
    #[default]
    Sparse,
    Malloc,
}

/// `allocator=sparse`, `malloc` or `malloc,mlock=false`. `zstd` and `mlock=true` are refused
/// by name: a component cannot lock its pages, and nbdbox has no zstd allocator.
fn parse_allocator(value: &str) -> Result<Allocator> {
    let (name, options) = value.split_once(',').unwrap_or((value, ""));
    let allocator = match name {
        "sparse" => Allocator::Sparse,
        "malloc" => Allocator::Malloc,
        "zstd" => {
            return Err(error(
                Errno::Einval,
                "memory: allocator=zstd is not supported by nbdbox",
            ))
        }
        _ => return Err(error(Errno::Einval, format!("memory: unknown allocator \"{name}\""))),
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("mlock", on)) if allocator == Allocator::Malloc => {
                if nbdbox_sdk::parse_bool("mlock", on)? {
                    return Err(error(
                        Errno::Einval,
                        "memory: mlock=true: a component cannot lock its memory",
                    ));
                }
            }
            _ => {
                return Err(error(
                    Errno::Einval,
                    format!("memory: allocator={name}: unknown option \"{option}\""),
                ))
            }
        }
    }
    Ok(allocator)
}

/// Where the data is: pages allocated on first write, or one allocation for the disk.
enum Store {
    Sparse(Sparse),
    Flat(Flat),
}

impl Default for Store {
    fn default() -> Store {
        Store::Sparse(Sparse::default())
    }
}

impl Store {
    fn read(&self, offset: u64, len: u32, out: impl FnMut(Chunk<'_>)) {
        match self {
            Store::Sparse(sparse) => sparse.read(offset, len, out),
            Store::Flat(flat) => flat.read(offset, len, out),
        }
    }

    fn write<E>(
        &mut self,
        offset: u64,
        len: u32,
        fill: impl FnMut(u32, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        match self {
            Store::Sparse(sparse) => sparse.write(offset, len, fill),
            Store::Flat(flat) => flat.write(offset, len, fill),
        }
    }

    fn zero(&mut self, offset: u64, len: u64) {
        match self {
            Store::Sparse(sparse) => sparse.zero(offset, len),
            Store::Flat(flat) => flat.zero(offset, len),
        }
    }

    /// A flat disk is data throughout, as nbdkit's malloc allocator reports it.
    fn extents(&self, offset: u64, len: u64, req_one: bool) -> Vec<sparse::Span> {
        match self {
            Store::Sparse(sparse) => sparse.extents(offset, len, req_one),
            Store::Flat(_) => vec![(offset, len, sparse::Kind::Data)],
        }
    }
}

#[derive(Default)]
struct Memory {
    size: Option<u64>,
    allocator: Allocator,
    disk: Rc<RefCell<Store>>,
}

impl Plugin for Memory {
    const NAME: &'static str = "memory";
    const DESCRIPTION: &'static str = "A sparse RAM disk shared by all connections";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Size of the RAM disk (required)."),
        Key::new(
            "allocator",
            Kind::Text,
            "allocator=sparse|malloc  Pages on first write (default), or the whole disk at startup.",
        ),
    ];
    const SHARED_STATE: bool = true;
    type Connection = MemoryConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "allocator" => self.allocator = parse_allocator(value)?,
            _ => self.size = Some(nbdbox_sdk::parse_size(key, value)?),
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        if self.size.is_none() {
            return Err(error(Errno::Einval, "you must specify size=<SIZE> on the command line"));
        }
        let store = match self.allocator {
            Allocator::Sparse => Store::Sparse(Sparse::new(page_budget())),
            Allocator::Malloc => {
                let size = self.size.unwrap_or_default();
                Store::Flat(Flat::new(size, page_budget() * sparse::PAGE_SIZE).map_err(|_| {
                    error(
                        Errno::Enomem,
                        format!("memory: allocator=malloc: {size} bytes do not fit in the instance's memory limit"),
                    )
                })?)
            }
        };
        self.disk = Rc::new(RefCell::new(store));
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
    disk: Rc<RefCell<Store>>,
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
