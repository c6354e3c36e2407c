//! Blocks of the layer below kept in a host scratch file, with a 2-bit state per block (the
//! storage of nbdkit's cow and cache filters, filters/cow/blk.c and filters/cache/blk.c).
//! State 0 always means "not in the file: read it from below"; what the other states mean
//! is the filter's.

use crate::{read_below, BlockMap};
use nbdbox_filter_sdk::grants::{self, File};
use nbdbox_filter_sdk::{to_usize, Next, Result};
use std::cell::{Cell, RefCell};

/// The state of blocks not in the file.
pub const ABSENT: u8 = 0;

/// The most bytes copied from below in one read.
const COPY_CHUNK: u64 = 4 << 20;

pub struct BlockFile {
    pub file: File,
    pub block_size: u64,
    map: RefCell<BlockMap>,
    /// The size of the layer below, once known.
    size: Cell<Option<u64>>,
}

impl BlockFile {
    /// An empty store in a new scratch file.
    pub fn new(block_size: u64) -> Result<BlockFile> {
        Ok(BlockFile {
            file: grants::scratch_file()?,
            block_size,
            map: RefCell::default(),
            size: Cell::new(None),
        })
    }

    /// Size the store for a layer below of `size` bytes: the file (sparse) holds whole
    /// blocks, so the last one may reach past `size`.
    pub fn set_size(&self, size: u64) -> Result<()> {
        if self.size.get() == Some(size) {
            return Ok(());
        }
        let blocks = size.div_ceil(self.block_size);
        self.file.set_size(blocks * self.block_size)?;
        self.map.borrow_mut().resize(blocks);
        self.size.set(Some(size));
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size.get().unwrap_or(0)
    }

    pub fn block_of(&self, offset: u64) -> u64 {
        offset / self.block_size
    }

    pub fn state(&self, block: u64) -> u8 {
        self.map.borrow().get(block)
    }

    pub fn set_block(&self, block: u64, state: u8) {
        self.map.borrow_mut().set(block, state);
    }

    /// Set the state of the whole blocks of `[offset, offset + len)` (both aligned).
    pub fn set_range(&self, offset: u64, len: u64, state: u8) {
        self.map
            .borrow_mut()
            .set_range(offset / self.block_size, len / self.block_size, state);
    }

    /// How many blocks are in `state`.
    pub fn count(&self, state: u8) -> u64 {
        self.map.borrow().count(state)
    }

    /// The state of the blocks from the one holding `pos`, and where their run ends (at most
    /// `end`).
    pub fn run(&self, pos: u64, end: u64) -> (u8, u64) {
        let first = self.block_of(pos);
        let last = self.block_of(end - 1);
        let (state, blocks) = self.map.borrow().run(first, last - first + 1);
        (state, ((first + blocks) * self.block_size).min(end))
    }

    /// The bytes of `[offset, end)` of the layer below that exist: the part past its end
    /// is left out.
    fn readable(&self, offset: u64, end: u64) -> u64 {
        end.min(self.size()).saturating_sub(offset)
    }

    /// Block `block` as the layer below has it, zero-padded to a whole block.
    pub fn block_below(&self, next: &Next, block: u64) -> Result<Vec<u8>> {
        let start = block * self.block_size;
        let readable = self.readable(start, start + self.block_size);
        let mut bytes = read_below(next, start, readable as u32)?;
        bytes.resize(to_usize(self.block_size)?, 0);
        Ok(bytes)
    }

    /// Block `block` as the file has it.
    pub fn block_in_file(&self, block: u64) -> Result<Vec<u8>> {
        self.file.read(self.block_size as u32, block * self.block_size)
    }

    /// Copy the whole blocks `[offset, end)` from below into the file, in `state`.
    pub fn copy_up(&self, next: &Next, offset: u64, end: u64, state: u8) -> Result<()> {
        let chunk = COPY_CHUNK.max(self.block_size);
        let mut at = offset;
        while at < end {
            let stop = (at + chunk).min(end);
            let readable = self.readable(at, stop);
            if readable > 0 {
                self.file.write(&read_below(next, at, readable as u32)?, at)?;
            }
            self.set_range(at, stop - at, state);
            at = stop;
        }
        Ok(())
    }
}
