//! cow: a writable copy-on-write overlay over a layer that is never written (nbdkit's
//! filters/cow/cow.c and blk.c). The layer below is opened read-only; writes, zeroes and
//! trims land in an overlay, a host scratch file, with a 2-bit state per block: still below,
//! data in the overlay, zero, trimmed. Reads of blocks still below come from below.
//!
//! Shared state: every connection to an export name must see the same overlay (nbdkit: "All
//! connections to the nbdkit instance see the same view of the disk"), so one instance serves
//! all connections and keeps one overlay per export name. That also makes the filter
//! multi-conn consistent: a write is visible to every connection as soon as it returns.

use filter_blocks::{
    preferred_block_size, push_extents_below, read_below_into, BlockFile, ExtentList, PerExport, Split, Switch, ABSENT,
};
use nbdbox_filter_sdk::grants::Advice;
use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{debug, parse_bool, parse_size, to_usize};
use std::rc::Rc;

/// Block states in the map.
const BELOW: u8 = ABSENT;
const DATA: u8 = 1;
/// Zeroed: reads as zeroes, reported as zero (not a hole).
const ZERO: u8 = 2;
/// Trimmed: reads as zeroes, reported as a hole.
const TRIMMED: u8 = 3;

const DEFAULT_BLOCK_SIZE: u64 = 64 * 1024;

#[derive(Clone, Copy)]
struct Settings {
    block_size: u64,
    on_cache: bool,
    on_read: Switch,
}

struct Cow {
    settings: Settings,
    /// One overlay per export name, made by the first connection to it.
    overlays: PerExport<Overlay>,
}

impl Default for Cow {
    fn default() -> Self {
        Cow {
            settings: Settings {
                block_size: DEFAULT_BLOCK_SIZE,
                on_cache: false,
                on_read: Switch::Off,
            },
            overlays: PerExport::default(),
        }
    }
}

impl Filter for Cow {
    const NAME: &'static str = "cow";
    const DESCRIPTION: &'static str = "nbdkit copy-on-write (COW) filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "cow-block-size",
            Kind::Size,
            "Set COW block size (power of 2, default 64K)",
        ),
        Key::new(
            "cow-on-cache",
            Kind::Bool,
            "Copy cache (prefetch) requests to the overlay",
        ),
        Key::new(
            "cow-on-read",
            Kind::TriggerFile,
            "true|false, or /PATH: copy read requests to the overlay (while PATH exists)",
        ),
    ];
    const SHARED_STATE: bool = true;
    type Connection = CowConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "cow-block-size" => {
                let size = parse_size(key, value)?;
                // The upper bound is the largest preferred block size NBD allows (the filter
                // advertises its block size as preferred); nbdkit allows up to 2G.
                if !(4096..=32 << 20).contains(&size) || !size.is_power_of_two() {
                    return Err(error(
                        Errno::Einval,
                        "cow-block-size is out of range (4096..32M) or not a power of 2",
                    ));
                }
                self.settings.block_size = size;
            }
            "cow-on-cache" => self.settings.on_cache = parse_bool(key, value)?,
            _ => self.settings.on_read = Switch::parse("cow-on-read", value)?,
        }
        Ok(())
    }

    /// The layer below is always opened read-only: it is never written.
    fn open_next(&self, _readonly: bool, export_name: &str) -> Result<next::Connection> {
        next::Connection::open(true, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, export_name: &str) -> Result<CowConnection> {
        let overlay = self.overlays.get_or_make(export_name, || {
            debug(&format!("new overlay for export '{export_name}'"));
            Ok(Overlay {
                store: BlockFile::new(self.settings.block_size)?,
            })
        })?;
        Ok(CowConnection {
            settings: self.settings,
            overlay,
        })
    }
}

/// One export's overlay: the blocks written, zeroed or trimmed, in a scratch file.
struct Overlay {
    store: BlockFile,
}

impl Overlay {
    /// The whole block `block` as it reads now.
    fn block_bytes(&self, next: &Next, block: u64) -> Result<Vec<u8>> {
        match self.store.state(block) {
            DATA => self.store.block_in_file(block),
            BELOW => self.store.block_below(next, block),
            _ => Ok(vec![0; to_usize(self.store.block_size)?]),
        }
    }

    /// Write `data` at `offset`, inside one block: in place when the block is in the
    /// overlay, else as a read-modify-write of the whole block.
    fn write_partial(&self, next: &Next, data: &[u8], offset: u64) -> Result<()> {
        let store = &self.store;
        let block = store.block_of(offset);
        if store.state(block) == DATA {
            return store.file.write(data, offset);
        }
        let mut bytes = self.block_bytes(next, block)?;
        let within = to_usize(offset - block * store.block_size)?;
        bytes[within..within + data.len()].copy_from_slice(data);
        store.file.write(&bytes, block * store.block_size)?;
        store.set_block(block, DATA);
        Ok(())
    }

    /// Zero `[offset, offset + count)`: whole blocks become `state` (their space in the
    /// overlay is given back), partial ones are written with zeroes.
    fn clear(&self, next: &Next, count: u64, offset: u64, state: u8) -> Result<()> {
        let store = &self.store;
        let split = Split::new(offset, count, store.block_size);
        for piece in [split.head, split.tail].into_iter().flatten() {
            if matches!(store.state(store.block_of(piece.offset)), ZERO | TRIMMED) {
                continue;
            }
            self.write_partial(next, &vec![0; to_usize(piece.len)?], piece.offset)?;
        }
        if let Some(body) = split.body {
            store.set_range(body.offset, body.len, state);
            // Space only: the map already says these blocks read as zeroes.
            let _ = store.file.punch_hole(body.len, body.offset);
        }
        Ok(())
    }
}

struct CowConnection {
    settings: Settings,
    overlay: Rc<Overlay>,
}

impl FilterConnection for CowConnection {
    /// The overlay is sized before the first request (nbdkit's cow_prepare).
    fn prepare(&self, next: &Next) -> Result<()> {
        let size = next.get_size()?;
        debug(&format!("underlying file size: {size}"));
        self.overlay.store.set_size(size)
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        Ok(Capabilities {
            can_write: true,
            can_flush: true,
            is_rotational: below.is_rotational,
            can_trim: true,
            // nbdkit 1.32 inherits "no zero" from the read-only layer below; the overlay
            // zeroes by itself, so it says so. A fast zero is refused: it is never faster.
            can_zero: ZeroMode::Native,
            can_fast_zero: true,
            can_extents: true,
            can_fua: FuaMode::Native,
            can_multi_conn: true,
            can_cache: CacheMode::Native,
        })
    }

    /// nbdkit's cow_block_size: the overlay's block size is the preferred size.
    fn block_size(&self, next: &Next) -> Result<Option<BlockSize>> {
        Ok(Some(preferred_block_size(
            next.block_size()?,
            self.settings.block_size as u32,
        )))
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let store = &self.overlay.store;
        let end = offset + u64::from(count);
        let on_read = self.settings.on_read.is_on();
        let mut pos = offset;
        while pos < end {
            let (state, run_end) = store.run(pos, end);
            let (at, len) = ((pos - offset) as u32, (run_end - pos) as u32);
            match state {
                DATA => store.file.read_into(dst, at, len, pos)?,
                BELOW if on_read => {
                    let bs = store.block_size;
                    store.copy_up(next, pos - pos % bs, run_end.next_multiple_of(bs), DATA)?;
                    store.file.read_into(dst, at, len, pos)?;
                }
                BELOW => read_below_into(next, dst, at, len, pos)?,
                _ => dst.zero(at, len),
            }
            pos = run_end;
        }
        Ok(())
    }

    /// FUA is ignored: the overlay is a scratch file, gone at exit.
    fn pwrite(&self, next: &Next, src: &WriteBuf, _count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let overlay = &self.overlay;
        let store = &overlay.store;
        let split = Split::new(offset, u64::from(src.len()), store.block_size);
        for piece in [split.head, split.tail].into_iter().flatten() {
            overlay.write_partial(next, &src.read(piece.at as u32, piece.len as u32), piece.offset)?;
        }
        if let Some(body) = split.body {
            store
                .file
                .write_from(src, body.at as u32, body.len as u32, body.offset)?;
            store.set_range(body.offset, body.len, DATA);
        }
        Ok(())
    }

    fn flush(&self, _next: &Next, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.overlay.clear(next, count, offset, TRIMMED)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        if flags.contains(CmdFlags::FAST_ZERO) {
            return Err(errno(Errno::Enotsup));
        }
        self.overlay.clear(next, count, offset, ZERO)
    }

    /// The overlay's blocks as they are; runs still below as the layer below reports them.
    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let store = &self.overlay.store;
        let bs = store.block_size;
        let end = (offset + count).next_multiple_of(bs);
        let mut list = ExtentList::new();
        let mut pos = offset - offset % bs;
        while pos < end {
            let (state, run_end) = store.run(pos, end);
            match state {
                DATA => list.push(pos, run_end - pos, ExtentFlags::empty()),
                ZERO => list.push(pos, run_end - pos, ExtentFlags::ZERO),
                TRIMMED => list.push(pos, run_end - pos, ExtentFlags::HOLE | ExtentFlags::ZERO),
                _ => push_extents_below(&mut list, next, pos, run_end.min(store.size()), flags)?,
            }
            if flags.contains(CmdFlags::REQ_ONE) {
                break;
            }
            pos = run_end;
        }
        Ok(list.into_vec())
    }

    /// nbdkit's cow_cache: blocks in the overlay are advised, blocks below are cached by
    /// the layer below, or copied up with cow-on-cache.
    fn cache(&self, next: &Next, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        let store = &self.overlay.store;
        let bs = store.block_size;
        let end = (offset + count).next_multiple_of(bs);
        let below_caches = next.capabilities()?.can_cache != CacheMode::None;
        let mut pos = offset - offset % bs;
        while pos < end {
            let (state, run_end) = store.run(pos, end);
            match state {
                DATA => store.file.advise(Advice::WillNeed, run_end - pos, pos),
                BELOW if self.settings.on_cache => store.copy_up(next, pos, run_end, DATA)?,
                BELOW if below_caches => {
                    let below_end = run_end.min(store.size());
                    if below_end > pos {
                        next.cache(below_end - pos, pos, CmdFlags::empty())?;
                    }
                }
                _ => {}
            }
            pos = run_end;
        }
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Cow);
