//! cache: keep blocks of the layer below in a host scratch file (nbdkit's
//! filters/cache/cache.c, blk.c, lru.c, reclaim.c). `cache=writeback` (default) keeps
//! writes in the cache until a flush writes them back; `writethrough` writes them below at
//! once, whole blocks at a time (as does a FUA write in writeback); `unsafe` ignores flushes. `cache-on-read`
//! caches what is read (`true`, `false`, or `/PATH`: while PATH exists, a trigger-file
//! grant). `cache-min-block-size` is the block size (power of 2, ≥ 4096, default 64K).
//! `cache-max-size` bounds the cache: past `cache-high-threshold` percent of it (default
//! 95) the least recently used blocks are written back if dirty and dropped until it is
//! under `cache-low-threshold` percent (default 80).
//!
//! Differences from nbdkit: extents report blocks that are dirty in the cache as data
//! (nbdkit passes the layer below's extents through, which can call unflushed data a hole);
//! a trim drops whole cached blocks and is passed on.
//!
//! State: shared, one cache per export name: every connection must see the same cache, or
//! a write in one would be invisible to the others until a flush.

mod lru;

use filter_blocks::{
    preferred_block_size, push_extents_below, read_below_into, BlockFile, ExtentList, PerExport, Split, Switch, ABSENT,
};
use lru::Lru;
use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{debug, parse_size, to_usize};
use std::cell::RefCell;
use std::rc::Rc;

/// In the cache, the same as below.
const CLEAN: u8 = 1;
/// In the cache, not yet written back.
const DIRTY: u8 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Writeback,
    Writethrough,
    Unsafe,
}

#[derive(Clone, Copy)]
struct Settings {
    mode: Mode,
    block_size: u64,
    max_size: Option<u64>,
    high_percent: u64,
    low_percent: u64,
    on_read: Switch,
}

struct Cache {
    settings: Settings,
    caches: PerExport<ExportCache>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            settings: Settings {
                mode: Mode::Writeback,
                block_size: 64 * 1024,
                max_size: None,
                high_percent: 95,
                low_percent: 80,
                on_read: Switch::Off,
            },
            caches: PerExport::default(),
        }
    }
}

fn parse_percent(key: &str, value: &str) -> Result<u64> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(error(
            Errno::Einval,
            format!("{key}: must be an integer percentage > 0: {value}"),
        )),
    }
}

impl Filter for Cache {
    const NAME: &'static str = "cache";
    const DESCRIPTION: &'static str = "nbdkit caching filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "cache",
            Kind::Text,
            "Set cache mode, one of writeback (default), writethrough, or unsafe",
        ),
        Key::new(
            "cache-min-block-size",
            Kind::Size,
            "Minimum block size, power of 2 >= 4096 (default 64K)",
        ),
        Key::new("cache-max-size", Kind::Size, "Set maximum space used by cache"),
        Key::new(
            "cache-high-threshold",
            Kind::Text,
            "Percentage of max size where reclaim begins (default 95)",
        ),
        Key::new(
            "cache-low-threshold",
            Kind::Text,
            "Percentage of max size where reclaim ends (default 80)",
        ),
        Key::new(
            "cache-on-read",
            Kind::TriggerFile,
            "true|false, or /PATH: cache read requests (while PATH exists)",
        ),
    ];
    const SHARED_STATE: bool = true;
    type Connection = CacheConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let settings = &mut self.settings;
        match key {
            "cache" => {
                settings.mode = match value {
                    "writeback" => Mode::Writeback,
                    "writethrough" => Mode::Writethrough,
                    "unsafe" => Mode::Unsafe,
                    _ => {
                        return Err(error(
                            Errno::Einval,
                            format!("invalid cache parameter, should be writeback|writethrough|unsafe: {value}"),
                        ))
                    }
                }
            }
            "cache-min-block-size" => {
                let size = parse_size(key, value)?;
                if !(4096..=32 << 20).contains(&size) || !size.is_power_of_two() {
                    return Err(error(
                        Errno::Einval,
                        "cache-min-block-size must be a power of 2 between 4096 and 32M",
                    ));
                }
                settings.block_size = size;
            }
            "cache-max-size" => settings.max_size = Some(parse_size(key, value)?),
            "cache-high-threshold" => settings.high_percent = parse_percent(key, value)?,
            "cache-low-threshold" => settings.low_percent = parse_percent(key, value)?,
            _ => settings.on_read = Switch::parse("cache-on-read", value)?,
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        if self.settings.low_percent >= self.settings.high_percent {
            return Err(error(
                Errno::Einval,
                "cache-low-threshold must be less than cache-high-threshold",
            ));
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, export_name: &str) -> Result<CacheConnection> {
        let cache = self.caches.get_or_make(export_name, || {
            Ok(ExportCache {
                settings: self.settings,
                store: BlockFile::new(self.settings.block_size)?,
                lru: RefCell::default(),
            })
        })?;
        Ok(CacheConnection { cache })
    }
}

/// One export's cache.
struct ExportCache {
    settings: Settings,
    store: BlockFile,
    lru: RefCell<Lru>,
}

impl ExportCache {
    fn is_cached(&self, block: u64) -> bool {
        self.store.state(block) != ABSENT
    }

    /// Blocks `[offset, end)` (whole blocks) are now cached in `state` and just used.
    fn cached(&self, offset: u64, end: u64, state: u8) {
        let bs = self.store.block_size;
        let mut lru = self.lru.borrow_mut();
        for block in offset / bs..end.div_ceil(bs) {
            self.store.set_block(block, state);
            lru.touch(block);
        }
    }

    fn touch(&self, offset: u64, end: u64) {
        let bs = self.store.block_size;
        let mut lru = self.lru.borrow_mut();
        for block in offset / bs..end.div_ceil(bs) {
            lru.touch(block);
        }
    }

    /// Write the dirty block `block` back to the layer below, whole, as nbdkit does.
    fn write_back(&self, next: &Next, block: u64, flags: CmdFlags) -> Result<()> {
        let store = &self.store;
        let start = block * store.block_size;
        let len = (start + store.block_size).min(store.size()) - start;
        let bytes = store.file.read(len as u32, start)?;
        filter_blocks::write_below(next, bytes, start, flags)?;
        store.set_block(block, CLEAN);
        Ok(())
    }

    /// Write through: the blocks of `[offset, end)` go back to the layer below now.
    fn write_through(&self, next: &Next, offset: u64, end: u64, flags: CmdFlags) -> Result<()> {
        let bs = self.store.block_size;
        for block in offset / bs..end.div_ceil(bs) {
            self.write_back(next, block, flags & CmdFlags::FUA)?;
        }
        Ok(())
    }

    /// Drop `block` from the cache (after writing it back if dirty).
    fn evict(&self, next: &Next, block: u64) -> Result<()> {
        if self.store.state(block) == DIRTY {
            self.write_back(next, block, CmdFlags::empty())?;
        }
        let bs = self.store.block_size;
        let _ = self.store.file.punch_hole(bs, block * bs);
        self.store.set_block(block, ABSENT);
        self.lru.borrow_mut().remove(block);
        Ok(())
    }

    /// nbdkit's reclaim: past the high threshold, drop the least recently used blocks until
    /// under the low one.
    fn reclaim(&self, next: &Next) -> Result<()> {
        let Some(max) = self.settings.max_size else {
            return Ok(());
        };
        let bs = self.store.block_size;
        let used = |lru: &Lru| lru.len() * bs;
        if used(&self.lru.borrow()) * 100 <= max * self.settings.high_percent {
            return Ok(());
        }
        debug(&format!("reclaiming: cache uses {} bytes", used(&self.lru.borrow())));
        while used(&self.lru.borrow()) * 100 > max * self.settings.low_percent {
            let Some(block) = self.lru.borrow().oldest() else { break };
            self.evict(next, block)?;
        }
        Ok(())
    }

    /// Put `data` at `offset` (inside one block) in the cache, dirty: in place when the
    /// block is cached, else as a read-modify-write of the whole block.
    fn write_partial(&self, next: &Next, data: &[u8], offset: u64) -> Result<()> {
        let store = &self.store;
        let block = store.block_of(offset);
        if store.state(block) == ABSENT {
            let mut bytes = store.block_below(next, block)?;
            let within = to_usize(offset - block * store.block_size)?;
            bytes[within..within + data.len()].copy_from_slice(data);
            store.file.write(&bytes, block * store.block_size)?;
        } else {
            store.file.write(data, offset)?;
        }
        store.set_block(block, DIRTY);
        self.lru.borrow_mut().touch(block);
        Ok(())
    }

    /// Write every dirty block back, in runs.
    fn flush_dirty(&self, next: &Next) -> Result<()> {
        let store = &self.store;
        let blocks = store.size().div_ceil(store.block_size);
        for block in 0..blocks {
            if store.state(block) == DIRTY {
                self.write_back(next, block, CmdFlags::empty())?;
            }
        }
        Ok(())
    }
}

struct CacheConnection {
    cache: Rc<ExportCache>,
}

impl CacheConnection {
    /// Whether a write goes to the layer below at once.
    fn through(&self, flags: CmdFlags) -> bool {
        match self.cache.settings.mode {
            Mode::Writethrough => true,
            Mode::Writeback => flags.contains(CmdFlags::FUA),
            Mode::Unsafe => false,
        }
    }
}

impl FilterConnection for CacheConnection {
    fn prepare(&self, next: &Next) -> Result<()> {
        self.cache.store.set_size(next.get_size()?)
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        Ok(Capabilities {
            can_flush: true,
            can_zero: ZeroMode::Native,
            // A zero here is never faster than writing: fast zeroes are refused.
            can_fast_zero: true,
            can_fua: FuaMode::Native,
            can_multi_conn: true,
            can_cache: CacheMode::Native,
            ..below
        })
    }

    /// nbdkit's cache_block_size: the cache's block size is the preferred size.
    fn block_size(&self, next: &Next) -> Result<Option<BlockSize>> {
        Ok(Some(preferred_block_size(
            next.block_size()?,
            self.cache.store.block_size as u32,
        )))
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let cache = &self.cache;
        let store = &cache.store;
        let end = offset + u64::from(count);
        let on_read = cache.settings.on_read.is_on();
        let mut pos = offset;
        while pos < end {
            let (state, run_end) = store.run(pos, end);
            let (at, len) = ((pos - offset) as u32, (run_end - pos) as u32);
            if state != ABSENT {
                store.file.read_into(dst, at, len, pos)?;
                cache.touch(pos, run_end);
            } else if on_read {
                let bs = store.block_size;
                let (start, stop) = (pos - pos % bs, run_end.next_multiple_of(bs));
                store.copy_up(next, start, stop, CLEAN)?;
                cache.cached(start, stop, CLEAN);
                store.file.read_into(dst, at, len, pos)?;
            } else {
                read_below_into(next, dst, at, len, pos)?;
            }
            pos = run_end;
        }
        cache.reclaim(next)
    }

    /// Into the cache; through to the layer below too, block by block, when the mode says.
    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let cache = &self.cache;
        let split = Split::new(offset, u64::from(count), cache.store.block_size);
        for piece in [split.head, split.tail].into_iter().flatten() {
            cache.write_partial(next, &src.read(piece.at as u32, piece.len as u32), piece.offset)?;
        }
        if let Some(body) = split.body {
            cache
                .store
                .file
                .write_from(src, body.at as u32, body.len as u32, body.offset)?;
            cache.cached(body.offset, body.offset + body.len, DIRTY);
        }
        if self.through(flags) {
            cache.write_through(next, offset, offset + u64::from(count), flags)?;
        }
        cache.reclaim(next)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        if flags.contains(CmdFlags::FAST_ZERO) {
            return Err(errno(Errno::Enotsup));
        }
        let cache = &self.cache;
        let split = Split::new(offset, count, cache.store.block_size);
        for piece in [split.head, split.tail].into_iter().flatten() {
            cache.write_partial(next, &vec![0; to_usize(piece.len)?], piece.offset)?;
        }
        if let Some(body) = split.body {
            let file = &cache.store.file;
            if file.zero_range(body.len, body.offset).is_err() {
                let zeroes = vec![0; to_usize(cache.store.block_size)?];
                for chunk in body.chunks(cache.store.block_size) {
                    file.write(&zeroes, chunk.offset)?;
                }
            }
            cache.cached(body.offset, body.offset + body.len, DIRTY);
        }
        if self.through(flags) {
            cache.write_through(next, offset, offset + count, flags)?;
        }
        cache.reclaim(next)
    }

    /// Whole cached blocks are dropped, partial ones zeroed in the cache, and the layer
    /// below trims the whole range.
    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let cache = &self.cache;
        let split = Split::new(offset, count, cache.store.block_size);
        for piece in [split.head, split.tail].into_iter().flatten() {
            if cache.is_cached(cache.store.block_of(piece.offset)) {
                cache.write_partial(next, &vec![0; to_usize(piece.len)?], piece.offset)?;
            }
        }
        if let Some(body) = split.body {
            let bs = cache.store.block_size;
            for block in body.offset / bs..(body.offset + body.len) / bs {
                cache.store.set_block(block, ABSENT);
                cache.lru.borrow_mut().remove(block);
            }
            let _ = cache.store.file.punch_hole(body.len, body.offset);
        }
        next.trim(count, offset, flags)
    }

    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        match self.cache.settings.mode {
            Mode::Unsafe => Ok(()),
            mode => {
                if mode == Mode::Writeback {
                    self.cache.flush_dirty(next)?;
                }
                if next.capabilities()?.can_flush {
                    next.flush(flags)?;
                }
                Ok(())
            }
        }
    }

    /// Prefetch: absent blocks are read into the cache.
    fn cache(&self, next: &Next, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        let cache = &self.cache;
        let store = &cache.store;
        let bs = store.block_size;
        let end = (offset + count).next_multiple_of(bs);
        let mut pos = offset - offset % bs;
        while pos < end {
            let (state, run_end) = store.run(pos, end);
            if state == ABSENT {
                store.copy_up(next, pos, run_end, CLEAN)?;
                cache.cached(pos, run_end, CLEAN);
            } else {
                cache.touch(pos, run_end);
            }
            pos = run_end;
        }
        cache.reclaim(next)
    }

    /// The layer below's extents, with blocks dirty in the cache as data.
    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let store = &self.cache.store;
        let end = offset + count;
        let mut list = ExtentList::new();
        let mut pos = offset;
        while pos < end {
            let (state, run_end) = store.run(pos, end);
            if state == DIRTY {
                list.push(pos, run_end - pos, ExtentFlags::empty());
            } else {
                push_extents_below(&mut list, next, pos, run_end, flags)?;
            }
            if flags.contains(CmdFlags::REQ_ONE) {
                break;
            }
            pos = run_end;
        }
        Ok(list.into_vec())
    }
}

nbdbox_filter_sdk::filter!(Cache);
