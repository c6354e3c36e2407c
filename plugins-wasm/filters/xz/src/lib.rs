//! xz: serve the decompressed content of an xz file that the layer below holds (nbdkit's
//! filters/xz/xz.c and xzfile.c), read-only. xz files seek on block boundaries: the index
//! at the end of each stream says where every block is, and a read decodes only the blocks
//! it touches, keeping the last `xz-max-depth` (default 8) decoded blocks. Files with a
//! block larger than `xz-max-block` (default 512M) are refused. Blocks are decoded with
//! lzma-rust2 (pure Rust); LZMA2 blocks only, as `xz` writes by default.
//!
//! State: per connection (the index and the decoded blocks), as nbdkit's; connections
//! decode in parallel, each in its own instance.

mod index;

use filter_blocks::{read_below, BelowReader};
use index::Block;
use lzma_rust2::Lzma2Reader;
use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{debug, memory_limit, parse_size, to_usize};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::rc::Rc;

#[derive(Clone, Copy)]
struct Xz {
    max_block: u64,
    max_depth: usize,
}

impl Default for Xz {
    fn default() -> Self {
        Xz {
            max_block: 512 << 20,
            max_depth: 8,
        }
    }
}

impl Filter for Xz {
    const NAME: &'static str = "xz";
    const DESCRIPTION: &'static str = "nbdkit XZ filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("xz-max-block", Kind::Size, "Maximum block size allowed (default 512M)"),
        Key::new("xz-max-depth", Kind::Text, "Maximum blocks in cache (default 8)"),
    ];
    type Connection = XzConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        if key == "xz-max-block" {
            self.max_block = parse_size(key, value)?;
        } else {
            self.max_depth = match value.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(error(Errno::Einval, "xz-max-depth parameter must be >= 1")),
            };
        }
        Ok(())
    }

    fn open_next(&self, _readonly: bool, export_name: &str) -> Result<next::Connection> {
        next::Connection::open(true, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<XzConnection> {
        Ok(XzConnection {
            settings: *self,
            blocks: RefCell::default(),
            decoded: RefCell::default(),
        })
    }
}

struct XzConnection {
    settings: Xz,
    blocks: RefCell<Vec<Block>>,
    /// Recently decoded blocks, most recent last: (block number, its bytes).
    decoded: RefCell<VecDeque<(usize, Rc<Vec<u8>>)>>,
}

fn bad(why: String) -> Error {
    error(Errno::Einval, why)
}

impl XzConnection {
    /// Block `n`'s bytes, decoded now or earlier.
    fn block(&self, next: &Next, n: usize) -> Result<Rc<Vec<u8>>> {
        let cached = self.decoded.borrow().iter().position(|(m, _)| *m == n);
        if let Some(i) = cached {
            let mut decoded = self.decoded.borrow_mut();
            let hit = decoded.remove(i).expect("found");
            decoded.push_back(hit.clone());
            return Ok(hit.1);
        }
        let block = self.blocks.borrow()[n];
        let header_size = (u64::from(read_below(next, block.file_offset, 1)?[0]) + 1) * 4;
        let header = read_below(next, block.file_offset, header_size as u32)?;
        let lzma2 = index::lzma2(&block, &header).map_err(bad)?;
        let mut bytes = vec![0; to_usize(block.size)?];
        Lzma2Reader::new(
            BelowReader::new(next, lzma2.data.0, lzma2.data.1),
            lzma2.dict_size,
            None,
        )
        .read_exact(&mut bytes)
        .map_err(|e| error(Errno::Eio, format!("xz: cannot decode block {n}: {e}")))?;
        let bytes = Rc::new(bytes);
        let mut decoded = self.decoded.borrow_mut();
        // Within the depth, and within half the instance's memory.
        let budget = memory_limit() / 2;
        while decoded.len() >= self.settings.max_depth
            || decoded.iter().map(|(_, b)| b.len() as u64).sum::<u64>() + block.size > budget
        {
            if decoded.pop_front().is_none() {
                break;
            }
        }
        decoded.push_back((n, bytes.clone()));
        Ok(bytes)
    }
}

impl FilterConnection for XzConnection {
    /// Read the index of every stream (nbdkit's xzfile_open).
    fn prepare(&self, next: &Next) -> Result<()> {
        let size = next.get_size()?;
        let blocks = index::blocks(size, |offset, len| read_below(next, offset, len as u32)).map_err(bad)?;
        if let Some(big) = blocks.iter().find(|b| b.size > self.settings.max_block) {
            return Err(bad(format!(
                "xz: file contains a block of {} bytes, larger than xz-max-block ({}); see the man page",
                big.size, self.settings.max_block
            )));
        }
        debug(&format!("xz: {} blocks", blocks.len()));
        *self.blocks.borrow_mut() = blocks;
        Ok(())
    }

    fn get_size(&self, _next: &Next) -> Result<u64> {
        Ok(self.blocks.borrow().last().map_or(0, |b| b.start + b.size))
    }

    /// Read-only, whatever the layer below is; the content is one data extent.
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        Ok(Capabilities {
            can_extents: false,
            can_cache: CacheMode::Emulate,
            ..next.capabilities()?.read_only()
        })
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let end = offset + u64::from(count);
        let mut pos = offset;
        while pos < end {
            let n = self.blocks.borrow().partition_point(|b| b.start + b.size <= pos);
            let Block { start, size, .. } = self.blocks.borrow()[n];
            let bytes = self.block(next, n)?;
            let from = to_usize(pos - start)?;
            let len = to_usize((start + size).min(end) - pos)?;
            dst.write((pos - offset) as u32, &bytes[from..from + len]);
            pos += len as u64;
        }
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Xz);
