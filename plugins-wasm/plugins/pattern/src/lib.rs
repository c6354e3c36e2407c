//! pattern: nbdkit-pattern-plugin(1), a read-only disk where every 8-byte word holds its own
//! offset as a 64-bit big-endian integer (a size that is not a multiple of 8 cuts the last
//! word short). `[size=]SIZE` defaults to 0, as in nbdkit's pattern.c.

use nbdbox_sdk::prelude::*;

#[derive(Default)]
struct Pattern {
    size: u64,
}

impl Plugin for Pattern {
    const NAME: &'static str = "pattern";
    const DESCRIPTION: &'static str = "Each 8 bytes hold their offset, big endian";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[Key::new("size", Kind::Size, "[size=]<SIZE>  Size of the backing disk.")];
    type Connection = PatternDisk;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        self.size = nbdbox_sdk::parse_size(key, value)?;
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<PatternDisk> {
        Ok(PatternDisk { size: self.size })
    }
}

/// The pattern's bytes [offset, offset + out.len()) into `out`.
fn fill(out: &mut [u8], offset: u64) {
    // A partial first word, then whole words, then a partial last one.
    let skip = (offset % 8) as usize;
    let head = if skip == 0 { 0 } else { (8 - skip).min(out.len()) };
    if head > 0 {
        out[..head].copy_from_slice(&(offset & !7).to_be_bytes()[skip..skip + head]);
    }
    let first = offset.wrapping_add(head as u64);
    let mut words = out[head..].chunks_exact_mut(8);
    let mut word = first;
    for chunk in &mut words {
        chunk.copy_from_slice(&word.to_be_bytes());
        word = word.wrapping_add(8);
    }
    let tail = words.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&word.to_be_bytes()[..n]);
}

struct PatternDisk {
    size: u64,
}

#[nbdbox_sdk::connection]
impl Connection for PatternDisk {
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
        nbdbox_sdk::in_chunks(count, offset, |chunk, at, chunk_offset| {
            fill(chunk, chunk_offset);
            dst.write(at, chunk);
            Ok(())
        })
    }
}

nbdbox_sdk::plugin!(Pattern);

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn words_hold_their_offset_big_endian() {
        let mut out = [0xaa; 24];
        fill(&mut out, 0);
        assert_eq!(out[..8], [0; 8]);
        assert_eq!(out[8..16], [0, 0, 0, 0, 0, 0, 0, 8]);
        assert_eq!(out[16..], [0, 0, 0, 0, 0, 0, 0, 0x10]);
    }

    #[test]
    fn unaligned_reads_cut_words() {
        let mut whole = [0; 40];
        fill(&mut whole, 0x1000);
        for start in 0..16 {
            for len in 0..24 {
                let mut part = vec![0; len];
                fill(&mut part, 0x1000 + start as u64);
                assert_eq!(part, whole[start..start + len], "start {start} len {len}");
            }
        }
    }

    #[test]
    fn the_last_word_of_the_largest_disk() {
        let mut out = [0; 7];
        fill(&mut out, (1 << 63) - 8);
        assert_eq!(out, [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }
}
