//! blocksize: make every request the layer below sees aligned to `minblock` and no larger
//! than `maxdata` (reads, writes) or `maxlen` (trim, zero, cache, extents), invisibly to the
//! client (nbdkit's filters/blocksize/blocksize.c). Unaligned heads and tails of reads are
//! read as whole blocks; of writes and zeroes, read-modify-written; of trims, dropped.
//! Larger requests are split. The size is rounded down to `minblock`.
//!
//! State: per connection (the limits, which may come from the layer below's block size).
//! The read-modify-write of one block must not interleave with another connection's, and
//! pooled instances share no memory, so it holds a lock made of a host counter.

use filter_blocks::{read_below, write_below, CounterLock, Piece, Split};
use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{parse_size, to_usize};
use std::cell::Cell;

/// The largest minblock nbdkit allows.
const MINBLOCK_LIMIT: u64 = 64 * 1024;
/// nbdkit's largest data request.
const MAX_REQUEST: u64 = 64 << 20;
/// The preferred block size advertised when the layer below names none.
const DEFAULT_PREFERRED: u32 = 4096;

static RMW: CounterLock = CounterLock::new("read-modify-write");

/// What the command line set (0: not set).
#[derive(Default, Clone, Copy)]
struct Blocksize {
    minblock: u64,
    maxdata: u64,
    maxlen: u64,
}

/// The limits one connection works with, settled at prepare.
#[derive(Default, Clone, Copy)]
struct Limits {
    minblock: u64,
    maxdata: u64,
    maxlen: u64,
}

impl Blocksize {
    /// nbdkit's defaults: from the layer below's block size where it has one.
    fn limits(&self, below: Option<BlockSize>) -> Limits {
        let minblock = match (self.minblock, below) {
            (0, Some(b)) => u64::from(b.minimum.max(1)),
            (0, None) => 1,
            (set, _) => set,
        };
        let maxdata = match (self.maxdata, below) {
            (0, Some(b)) if b.maximum != u32::MAX => MAX_REQUEST.min(u64::from(b.maximum)),
            (0, _) => MAX_REQUEST,
            (set, _) => set,
        };
        let maxlen = match self.maxlen {
            0 => u64::from(u32::MAX) / minblock * minblock,
            set => set,
        };
        Limits {
            minblock,
            maxdata: maxdata / minblock * minblock,
            maxlen,
        }
    }
}

fn parse_limit(key: &str, value: &str) -> Result<u64> {
    match parse_size(key, value)? {
        0 => Err(error(
            Errno::Einval,
            format!("parameter '{key}' must be non-zero if specified"),
        )),
        size if size > u64::from(u32::MAX) => Err(error(Errno::Einval, format!("parameter '{key}' too large"))),
        size => Ok(size),
    }
}

impl Filter for Blocksize {
    const NAME: &'static str = "blocksize";
    const DESCRIPTION: &'static str = "nbdkit blocksize filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "minblock",
            Kind::Size,
            "Minimum block size, power of 2 <= 64k (default 1)",
        ),
        Key::new("maxdata", Kind::Size, "Maximum size for read/write (default 64M)"),
        Key::new("maxlen", Kind::Size, "Maximum size for trim/zero (default 4G-minblock)"),
    ];
    type Connection = BlocksizeConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let size = parse_limit(key, value)?;
        match key {
            "minblock" => self.minblock = size,
            "maxdata" => self.maxdata = size,
            _ => self.maxlen = size,
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        let minblock = self.minblock.max(1);
        if !minblock.is_power_of_two() {
            return Err(error(Errno::Einval, "minblock must be a power of 2"));
        }
        if minblock > MINBLOCK_LIMIT {
            return Err(error(
                Errno::Einval,
                format!("minblock must not exceed {MINBLOCK_LIMIT}"),
            ));
        }
        for (name, value) in [("maxdata", self.maxdata), ("maxlen", self.maxlen)] {
            if !value.is_multiple_of(minblock) {
                return Err(error(Errno::Einval, format!("{name} must be a multiple of {minblock}")));
            }
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<BlocksizeConnection> {
        Ok(BlocksizeConnection {
            config: *self,
            limits: Cell::default(),
        })
    }
}

struct BlocksizeConnection {
    config: Blocksize,
    limits: Cell<Limits>,
}

impl BlocksizeConnection {
    fn minblock(&self) -> u64 {
        self.limits.get().minblock
    }

    /// FUA that the layer below only emulates is done once, as a flush at the end, rather
    /// than once per piece (nbdkit's need_flush).
    fn split_fua(&self, next: &Next, flags: CmdFlags) -> Result<(CmdFlags, bool)> {
        if flags.contains(CmdFlags::FUA) && next.capabilities()?.can_fua == FuaMode::Emulate {
            return Ok((flags - CmdFlags::FUA, true));
        }
        Ok((flags, false))
    }

    /// Replace `piece` (inside one block) with `data` in that block, under the lock.
    fn read_modify_write(&self, next: &Next, piece: Piece, data: &[u8], flags: CmdFlags) -> Result<()> {
        let minblock = self.minblock();
        let start = piece.offset - piece.offset % minblock;
        let _held = RMW.lock();
        let mut block = read_below(next, start, minblock as u32)?;
        let within = to_usize(piece.offset - start)?;
        block[within..within + data.len()].copy_from_slice(data);
        write_below(next, block, start, flags)
    }
}

impl FilterConnection for BlocksizeConnection {
    fn prepare(&self, next: &Next) -> Result<()> {
        self.limits.set(self.config.limits(next.block_size()?));
        Ok(())
    }

    /// Rounded down: the unaligned tail cannot be served safely.
    fn get_size(&self, next: &Next) -> Result<u64> {
        let size = next.get_size()?;
        Ok(size - size % self.minblock())
    }

    /// Any size is fine for the client now; the preferred size is at least a block.
    fn block_size(&self, next: &Next) -> Result<Option<BlockSize>> {
        let preferred = next
            .block_size()?
            .map_or(DEFAULT_PREFERRED, |b| b.preferred.max(DEFAULT_PREFERRED));
        Ok(Some(BlockSize {
            minimum: 1,
            preferred: preferred.max(self.minblock() as u32),
            maximum: u32::MAX,
        }))
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let Limits { minblock, maxdata, .. } = self.limits.get();
        let split = Split::new(offset, u64::from(count), minblock);
        if split.is_aligned() && u64::from(count) <= maxdata {
            return next.pread(dst, count, offset, flags);
        }
        for piece in [split.head, split.tail].into_iter().flatten() {
            let start = piece.offset - piece.offset % minblock;
            let block = read_below(next, start, minblock as u32)?;
            let within = to_usize(piece.offset - start)?;
            dst.write(piece.at as u32, &block[within..within + to_usize(piece.len)?]);
        }
        for chunk in split.body.into_iter().flat_map(|body| body.chunks(maxdata)) {
            dst.write(chunk.at as u32, &read_below(next, chunk.offset, chunk.len as u32)?);
        }
        Ok(())
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let Limits { minblock, maxdata, .. } = self.limits.get();
        let split = Split::new(offset, u64::from(count), minblock);
        if split.is_aligned() && u64::from(count) <= maxdata {
            return next.pwrite(src, count, offset, flags);
        }
        let (flags, flush) = self.split_fua(next, flags)?;
        for piece in [split.head, split.tail].into_iter().flatten() {
            self.read_modify_write(next, piece, &src.read(piece.at as u32, piece.len as u32), flags)?;
        }
        for chunk in split.body.into_iter().flat_map(|body| body.chunks(maxdata)) {
            write_below(next, src.read(chunk.at as u32, chunk.len as u32), chunk.offset, flags)?;
        }
        if flush {
            next.flush(CmdFlags::empty())?;
        }
        Ok(())
    }

    /// Unaligned heads and tails are dropped: a trim is advisory.
    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let Limits { minblock, maxlen, .. } = self.limits.get();
        let (flags, flush) = self.split_fua(next, flags)?;
        for chunk in Split::new(offset, count, minblock)
            .body
            .into_iter()
            .flat_map(|b| b.chunks(maxlen))
        {
            next.trim(chunk.len, chunk.offset, flags)?;
        }
        if flush {
            next.flush(CmdFlags::empty())?;
        }
        Ok(())
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let Limits { minblock, maxlen, .. } = self.limits.get();
        let split = Split::new(offset, count, minblock);
        // A request that needs more than one call below is not fast (nbdkit).
        if flags.contains(CmdFlags::FAST_ZERO) && (!split.is_aligned() || count > maxlen) {
            return Err(errno(Errno::Enotsup));
        }
        let (flags, flush) = self.split_fua(next, flags)?;
        for piece in [split.head, split.tail].into_iter().flatten() {
            let zeroes = vec![0; to_usize(piece.len)?];
            self.read_modify_write(next, piece, &zeroes, flags - CmdFlags::MAY_TRIM - CmdFlags::FAST_ZERO)?;
        }
        for chunk in split.body.into_iter().flat_map(|body| body.chunks(maxlen)) {
            next.zero(chunk.len, chunk.offset, flags)?;
        }
        if flush {
            next.flush(CmdFlags::empty())?;
        }
        Ok(())
    }

    /// Asked for whole blocks and answered in whole blocks (nbdkit_extents_aligned); a
    /// shorter answer than asked for is fine.
    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let Limits { minblock, maxlen, .. } = self.limits.get();
        let start = offset - offset % minblock;
        let end = (offset + count).next_multiple_of(minblock);
        let below = next.extents((end - start).min(maxlen), start, flags)?;
        Ok(filter_blocks::aligned(&below, minblock))
    }

    /// Rounded out to whole blocks.
    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let Limits { minblock, maxdata, .. } = self.limits.get();
        let start = offset - offset % minblock;
        let end = (offset + count).next_multiple_of(minblock);
        let whole = Piece {
            offset: start,
            len: end - start,
            at: 0,
        };
        for chunk in whole.chunks(maxdata) {
            next.cache(chunk.len, chunk.offset, flags)?;
        }
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Blocksize);
