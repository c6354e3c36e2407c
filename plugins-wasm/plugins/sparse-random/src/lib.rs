//! sparse-random: nbdkit-sparse-random-plugin(1), a disk shaped like a virtual machine's:
//! runs of random data between runs of holes, the same for the same `seed=` as nbdkit's
//! (plugins/sparse-random/sparse-random.c). `percent=` (default 10) of it is data in runs of
//! `runlength=` bytes on average (default 16777216); each 4 KiB data block repeats one random
//! non-zero byte, or holds random bytes with `random-content=true`. Writes must write what
//! is there (EIO otherwise) and trim and zero only holes, so a copy to itself checks a
//! copying program. Every instance draws the same map at get-ready (1 bit per 4 KiB: 32 MiB
//! for 1 TiB); without `seed=` the seed is the time, chosen once for all instances.

mod map;

use std::rc::Rc;

use map::{fill_block, DataMap, BLOCK};
use nbdbox_sdk::prelude::*;

const BLOCK_LEN: usize = BLOCK as usize;

struct SparseRandom {
    size: u64,
    seed: Option<u32>,
    percent: f64,
    runlength: u64,
    random_content: bool,
    map: Rc<DataMap>,
}

impl Default for SparseRandom {
    fn default() -> Self {
        SparseRandom {
            size: 0,
            seed: None,
            percent: 10.0,
            runlength: 16 << 20,
            random_content: false,
            map: Rc::new(DataMap::new(0, 0, 0.0, 1)),
        }
    }
}

fn einval(why: String) -> Error {
    error(Errno::Einval, why)
}

/// sscanf's `%lf`: the number at the start of `value` (the rest is ignored, as sscanf does).
fn parse_percent(value: &str) -> Option<f64> {
    let trimmed = value.trim_start();
    let end = trimmed
        .char_indices()
        .take_while(|&(i, c)| {
            c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0) || c == 'e' || c == 'E'
        })
        .map(|(i, c)| i + c.len_utf8())
        .last()?;
    (0..=end).rev().find_map(|n| trimmed[..n].parse().ok())
}

impl Plugin for SparseRandom {
    const NAME: &'static str = "sparse-random";
    const DESCRIPTION: &'static str = "Sparse runs of random data, the same for the same seed";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Size of the backing disk."),
        Key::new("seed", Kind::Text, "seed=<SEED>  Random number generator seed."),
        Key::new(
            "percent",
            Kind::Text,
            "percent=<PERCENT>  Percentage of data (default 10).",
        ),
        Key::new(
            "runlength",
            Kind::Text,
            "runlength=<BYTES>  Expected average run length of data (default 16777216).",
        ),
        Key::new(
            "random-content",
            Kind::Bool,
            "random-content=true  Fully random content in each block.",
        ),
    ];
    type Connection = SparseRandomDisk;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "size" => self.size = nbdbox_sdk::parse_size(key, value)?,
            "seed" => self.seed = Some(nbdkit_parse::parse_u32(key, value).map_err(einval)?),
            "percent" => {
                self.percent = parse_percent(value)
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| einval(format!("cannot parse percent parameter: {value}")))?;
            }
            "runlength" => {
                self.runlength = nbdkit_parse::parse_u64(key, value).map_err(einval)?;
                if self.runlength == 0 {
                    return Err(einval("runlength parameter must be > 0".into()));
                }
            }
            _ => self.random_content = nbdbox_sdk::parse_bool(key, value)?,
        }
        Ok(())
    }

    fn get_ready(&mut self) -> Result<()> {
        let seed = *self.seed.get_or_insert_with(|| once::value("seed", time_seed) as u32);
        self.map = Rc::new(DataMap::new(self.size, seed, self.percent, self.runlength));
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<SparseRandomDisk> {
        Ok(SparseRandomDisk {
            size: self.size,
            seed: self.seed.unwrap_or_default(),
            random_content: self.random_content,
            map: Rc::clone(&self.map),
        })
    }
}

/// sparse-random.c's default seed: time(NULL), as an unsigned 32-bit number.
fn time_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::from(now.map_or(0, |d| d.as_secs()) as u32)
}

struct SparseRandomDisk {
    size: u64,
    seed: u32,
    random_content: bool,
    map: Rc<DataMap>,
}

/// One block's part of a request: the block, the bytes of it wanted, where in the request
/// they go, and the offset sparse-random.c seeds a data block from.
struct Piece {
    block: u64,
    within: std::ops::Range<usize>,
    at: u64,
    seed_offset: u64,
}

/// The blocks of [offset, offset + count) as sparse-random.c walks them: an unaligned head
/// (seeded from the request's offset), whole blocks, an unaligned tail.
fn pieces(count: u64, offset: u64) -> impl Iterator<Item = Piece> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= count {
            return None;
        }
        let pos = offset + at;
        let skip = (pos % BLOCK) as usize;
        let n = (BLOCK - pos % BLOCK).min(count - at) as usize;
        let piece = Piece {
            block: pos / BLOCK,
            within: skip..skip + n,
            at,
            seed_offset: pos,
        };
        at += n as u64;
        Some(piece)
    })
}

impl SparseRandomDisk {
    fn block(&self, piece: &Piece, buf: &mut [u8; BLOCK_LEN]) {
        if self.map.is_data(piece.block) {
            fill_block(buf, self.seed, piece.seed_offset, self.random_content);
        } else {
            buf.fill(0);
        }
    }

    /// trim and zero may only "write" holes.
    fn only_holes(&self, count: u64, offset: u64) -> Result<()> {
        if pieces(count, offset).any(|p| self.map.is_data(p.block)) {
            return Err(error(Errno::Eio, "trying to trim or zero non-hole in disk"));
        }
        Ok(())
    }
}

#[nbdbox_sdk::connection]
impl Connection for SparseRandomDisk {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_multi_conn: true,
            can_cache: CacheMode::Native,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let mut buf = [0; BLOCK_LEN];
        for piece in pieces(count.into(), offset) {
            let at = piece.at as u32;
            if self.map.is_data(piece.block) {
                self.block(&piece, &mut buf);
                dst.write(at, &buf[piece.within.clone()]);
            } else {
                dst.zero(at, piece.within.len() as u32);
            }
        }
        Ok(())
    }

    /// sparse-random.c: a write must match what a read returns.
    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let data = src.read(0, count);
        let mut buf = [0; BLOCK_LEN];
        for piece in pieces(count.into(), offset) {
            self.block(&piece, &mut buf);
            let written = &data[piece.at as usize..piece.at as usize + piece.within.len()];
            if written != &buf[piece.within] {
                return Err(error(Errno::Eio, "data written does not match expected"));
            }
        }
        Ok(())
    }

    /// Nothing is stored, but nbdcopy --flush needs flush.
    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.only_holes(count, offset)
    }

    fn zero(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.only_holes(count, offset)
    }

    /// Block by block, runs of one kind merged (as nbdkit_add_extent does).
    fn extents(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<Vec<Extent>> {
        let mut extents: Vec<Extent> = Vec::new();
        for piece in pieces(count, offset) {
            let flags = if self.map.is_data(piece.block) {
                ExtentFlags::empty()
            } else {
                ExtentFlags::HOLE | ExtentFlags::ZERO
            };
            let length = piece.within.len() as u64;
            match extents.last_mut() {
                Some(last) if last.flags == flags => last.length += length,
                _ => extents.push(Extent {
                    offset: offset + piece.at,
                    length,
                    flags,
                }),
            }
        }
        Ok(extents)
    }
}

nbdbox_sdk::plugin!(SparseRandom);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_walk_head_body_tail() {
        let p: Vec<(u64, usize, usize, u64, u64)> = pieces(10000, 4000)
            .map(|p| (p.block, p.within.start, p.within.end, p.at, p.seed_offset))
            .collect();
        assert_eq!(
            p,
            vec![
                (0, 4000, 4096, 0, 4000),
                (1, 0, 4096, 96, 4096),
                (2, 0, 4096, 4192, 8192),
                (3, 0, 1712, 8288, 12288)
            ]
        );
    }

    #[test]
    fn percent_reads_like_sscanf() {
        assert_eq!(parse_percent("25"), Some(25.0));
        assert_eq!(parse_percent(" 2.5x"), Some(2.5));
        assert_eq!(parse_percent("1e1"), Some(10.0));
        assert_eq!(parse_percent("x"), None);
    }
}
