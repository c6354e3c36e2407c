//! Where the blocks of an xz file are (the .xz format: stream header and footer, index,
//! block headers), so that one block can be decoded without the ones before it, as nbdkit's
//! filters/xz/xzfile.c does with liblzma's index. Plain Rust over a read callback,
//! unit-tested natively.

/// One block: where its compressed data is and what it decompresses to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Offset of the block header in the file.
    pub file_offset: u64,
    /// Unpadded size (header + compressed data + check).
    pub unpadded: u64,
    /// Offset of its first byte in the decompressed content.
    pub start: u64,
    pub size: u64,
    /// Check size of its stream.
    pub check: u64,
}

/// How an LZMA2 block is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lzma2 {
    /// Where the compressed data starts and ends in the file.
    pub data: (u64, u64),
    pub dict_size: u32,
}

const HEADER_MAGIC: &[u8] = b"\xfd7zXZ\0";
const FOOTER_MAGIC: &[u8] = b"YZ";
const LZMA2: u64 = 0x21;

fn bad<T>(why: impl Into<String>) -> Result<T, String> {
    Err(why.into())
}

/// A multibyte integer (up to 9 bytes, 7 bits each) at `*at`, advancing it.
fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..9 {
        let Some(&b) = bytes.get(*at) else {
            return bad("xz: truncated number");
        };
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    bad("xz: number too long")
}

/// Check size for the stream flags' check type.
fn check_size(flags: &[u8]) -> u64 {
    [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64][usize::from(flags[1] & 0x0f)]
}

/// The blocks of an xz file of `size` bytes, in order, every stream included; `read(offset,
/// len)` reads the file.
pub fn blocks<E: std::fmt::Debug>(
    size: u64,
    read: impl Fn(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Vec<Block>, String> {
    let read = |offset, len| read(offset, len).map_err(|e| format!("xz: read failed: {e:?}"));
    let mut streams = Vec::new();
    let mut end = size;
    while end > 0 {
        // Stream padding: zeroes, in 4-byte units.
        while end >= 4 && read(end - 4, 4)? == [0; 4] {
            end -= 4;
        }
        if end < 24 {
            return bad("xz: not an xz file (too short)");
        }
        let footer = read(end - 12, 12)?;
        if &footer[10..] != FOOTER_MAGIC {
            return bad("xz: not an xz file (no stream footer)");
        }
        let index_size = (u64::from(u32::from_le_bytes(footer[4..8].try_into().expect("4 bytes"))) + 1) * 4;
        let index_start = (end - 12)
            .checked_sub(index_size)
            .ok_or("xz: index larger than the file")?;
        let index = read(index_start, index_size)?;
        if index[0] != 0 {
            return bad("xz: bad index indicator");
        }
        let mut at = 1;
        let count = varint(&index, &mut at)?;
        let mut records = Vec::new();
        for _ in 0..count {
            let unpadded = varint(&index, &mut at)?;
            let uncompressed = varint(&index, &mut at)?;
            records.push((unpadded, uncompressed));
        }
        let blocks_size: u64 = records.iter().map(|&(unpadded, _)| unpadded.next_multiple_of(4)).sum();
        let stream_start = index_start
            .checked_sub(blocks_size + 12)
            .ok_or("xz: blocks larger than the file")?;
        let header = read(stream_start, 12)?;
        if &header[..6] != HEADER_MAGIC {
            return bad("xz: not an xz file (no stream header)");
        }
        streams.push((stream_start + 12, check_size(&header[6..8]), records));
        end = stream_start;
    }
    let mut blocks = Vec::new();
    let mut start = 0;
    for (mut file_offset, check, records) in streams.into_iter().rev() {
        for (unpadded, size) in records {
            blocks.push(Block {
                file_offset,
                unpadded,
                start,
                size,
                check,
            });
            file_offset += unpadded.next_multiple_of(4);
            start += size;
        }
    }
    Ok(blocks)
}

/// Read `block`'s header: only LZMA2 alone is decoded (nbdkit, through liblzma, decodes the
/// BCJ and delta filters too).
pub fn lzma2(block: &Block, header: &[u8]) -> Result<Lzma2, String> {
    let header_size = (u64::from(header[0]) + 1) * 4;
    let flags = header[1];
    let mut at = 2;
    if flags & 0x40 != 0 {
        varint(header, &mut at)?;
    }
    if flags & 0x80 != 0 {
        varint(header, &mut at)?;
    }
    if flags & 0x03 != 0 {
        return bad("xz: blocks with more than one filter (BCJ, delta) are not supported");
    }
    let id = varint(header, &mut at)?;
    let props_size = varint(header, &mut at)?;
    if id != LZMA2 || props_size != 1 {
        return bad(format!("xz: filter {id:#x} is not supported, only LZMA2"));
    }
    let bits = u32::from(header[at] & 0x3f);
    let dict_size = match bits {
        40 => u32::MAX,
        0..=39 => (2 | (bits & 1)) << (bits / 2 + 11),
        _ => return bad("xz: bad LZMA2 dictionary size"),
    };
    let data_start = block.file_offset + header_size;
    let data_end = block.file_offset + block.unpadded - block.check;
    Ok(Lzma2 {
        data: (data_start, data_end),
        dict_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let bytes = [0x05, 0x80, 0x01, 0xff, 0x7f];
        let mut at = 0;
        assert_eq!(varint(&bytes, &mut at), Ok(5));
        assert_eq!(varint(&bytes, &mut at), Ok(128));
        assert_eq!(varint(&bytes, &mut at), Ok(16383));
        assert!(varint(&[0x80], &mut 0).is_err());
    }

    #[test]
    fn lzma2_header() {
        let block = Block {
            file_offset: 100,
            unpadded: 60,
            start: 0,
            size: 1000,
            check: 8,
        };
        // Header of 12 bytes: no sizes, one filter LZMA2 with dictionary code 20 (4 MiB).
        let header = [2, 0, 0x21, 1, 20, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            lzma2(&block, &header),
            Ok(Lzma2 {
                data: (112, 152),
                dict_size: 4 << 20
            })
        );
        let bcj = [2, 1, 0x04, 0, 0x21, 1, 20, 0, 0, 0, 0, 0];
        assert!(lzma2(&block, &bcj).is_err());
    }

    #[test]
    fn not_xz() {
        let file = [1u8; 100];
        let read = |o: u64, l: u64| Ok::<_, ()>(file[o as usize..(o + l) as usize].to_vec());
        assert!(blocks(100, read).is_err());
    }
}
