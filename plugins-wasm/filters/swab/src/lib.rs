//! swab: nbdkit-swab-filter(1), swapping the bytes of every 2-, 4- or 8-byte word
//! (`swab-bits=16` by default, 32, 64; 8 changes nothing) in reads and writes, as nbdkit's
//! filters/swab/swab.c. The size is cut down to a whole word, requests must be word-aligned
//! (EINVAL otherwise), the minimum block size is raised to a word, and block status is given
//! in whole words.

mod aligned;

use aligned::{aligned_extents, Span};
use nbdbox_filter_sdk::prelude::*;

/// How much of a read is swapped in component memory at a time.
const CHUNK: u32 = 1 << 20;

struct Swab {
    /// swab-bits / 8: the word whose bytes are reversed.
    word: u32,
}

impl Default for Swab {
    fn default() -> Self {
        Swab { word: 2 }
    }
}

impl Filter for Swab {
    const NAME: &'static str = "swab";
    const DESCRIPTION: &'static str = "Swap the bytes of each 16, 32 or 64 bit word";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "swab-bits",
        Kind::Text,
        "swab-bits=8|16|32|64  Size of byte swap (default 16).",
    )];
    type Connection = Swapped;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let bits = nbdkit_parse::parse_int(key, value).map_err(|why| error(Errno::Einval, why))?;
        if ![8, 16, 32, 64].contains(&bits) {
            return Err(error(Errno::Einval, "invalid swab-bits, must be 8, 16, 32 or 64"));
        }
        self.word = bits as u32 / 8;
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Swapped> {
        Ok(Swapped { word: self.word })
    }
}

struct Swapped {
    word: u32,
}

/// Reverse the bytes of each `word`-byte word of `data` (whose length is whole words).
fn swap_words(data: &mut [u8], word: u32) {
    if word > 1 {
        data.chunks_exact_mut(word as usize).for_each(<[u8]>::reverse);
    }
}

impl Swapped {
    fn check_aligned(&self, count: u64, offset: u64) -> Result<()> {
        let word = u64::from(self.word);
        if !count.is_multiple_of(word) || !offset.is_multiple_of(word) {
            return Err(error(Errno::Einval, "requests to this filter must be aligned"));
        }
        Ok(())
    }
}

fn to_span(e: &Extent) -> Span {
    let hole = if e.flags.contains(ExtentFlags::HOLE) { 1 } else { 0 };
    let zero = if e.flags.contains(ExtentFlags::ZERO) { 2 } else { 0 };
    Span {
        offset: e.offset,
        length: e.length,
        bits: hole | zero,
    }
}

fn to_extent(s: Span) -> Extent {
    let mut flags = ExtentFlags::empty();
    if s.bits & 1 != 0 {
        flags |= ExtentFlags::HOLE;
    }
    if s.bits & 2 != 0 {
        flags |= ExtentFlags::ZERO;
    }
    Extent {
        offset: s.offset,
        length: s.length,
        flags,
    }
}

impl FilterConnection for Swapped {
    fn get_size(&self, next: &Next) -> Result<u64> {
        let size = next.get_size()?;
        Ok(size - size % u64::from(self.word))
    }

    /// swab.c's block_size: no constraints below become word / 512 / 4G-1; otherwise the
    /// minimum is raised to a word.
    fn block_size(&self, next: &Next) -> Result<Option<BlockSize>> {
        Ok(Some(match next.block_size()? {
            Some(below) if below.minimum != 0 => BlockSize {
                minimum: below.minimum.max(self.word),
                ..below
            },
            _ => BlockSize {
                minimum: self.word,
                preferred: 512,
                maximum: u32::MAX,
            },
        }))
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check_aligned(count.into(), offset)?;
        next.pread(dst, count, offset, flags)?;
        if self.word > 1 {
            let mut at = 0;
            while at < count {
                let n = (count - at).min(CHUNK);
                let mut data = dst.read(at, n);
                swap_words(&mut data, self.word);
                dst.write(at, &data);
                at += n;
            }
        }
        Ok(())
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check_aligned(count.into(), offset)?;
        if self.word == 1 {
            return next.pwrite(src, count, offset, flags);
        }
        let mut data = Vec::with_capacity(count as usize);
        let mut at = 0;
        while at < count {
            let n = (count - at).min(CHUNK);
            data.extend_from_slice(&src.read(at, n));
            at += n;
        }
        swap_words(&mut data, self.word);
        next.pwrite(&WriteBuf::new(&data), count, offset, flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check_aligned(count, offset)?;
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check_aligned(count, offset)?;
        next.zero(count, offset, flags)
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.check_aligned(count, offset)?;
        let spans = aligned_extents(
            count,
            offset,
            flags.contains(CmdFlags::REQ_ONE),
            u64::from(self.word),
            |count, offset, req_one| {
                let flags = if req_one { CmdFlags::REQ_ONE } else { CmdFlags::empty() };
                Ok(next.extents(count, offset, flags)?.iter().map(to_span).collect())
            },
        )?;
        Ok(spans.into_iter().map(to_extent).collect())
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check_aligned(count, offset)?;
        next.cache(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Swab);

#[cfg(test)]
mod tests {
    use super::swap_words;

    #[test]
    fn words_are_reversed() {
        let mut data: Vec<u8> = (0..16).collect();
        swap_words(&mut data, 2);
        assert_eq!(data[..4], [1, 0, 3, 2]);
        let mut data: Vec<u8> = (0..16).collect();
        swap_words(&mut data, 8);
        assert_eq!(data[..9], [7, 6, 5, 4, 3, 2, 1, 0, 15]);
        let mut data: Vec<u8> = (0..4).collect();
        swap_words(&mut data, 1);
        assert_eq!(data, [0, 1, 2, 3]);
    }
}
