//! Moving bytes between the layer below and component memory. A filter that changes data
//! (read-modify-write, a block copied into an overlay) needs it in its own memory; plain
//! pass-through should hand the host's buffers on instead.

use nbdbox_filter_sdk::{CmdFlags, Next, ReadBuf, Result, WriteBuf};

/// `count` bytes at `offset` of the layer below.
pub fn read_below(next: &Next, offset: u64, count: u32) -> Result<Vec<u8>> {
    let scratch = ReadBuf::new(count);
    next.pread(&scratch, count, offset, CmdFlags::empty())?;
    Ok(scratch.read(0, count))
}

/// Read `count` bytes at `offset` of the layer below into `dst` at `at`: straight into `dst`
/// when they fill it from its start, through component memory otherwise (the layer below
/// always fills a buffer from its start).
pub fn read_below_into(next: &Next, dst: &ReadBuf, at: u32, count: u32, offset: u64) -> Result<()> {
    if at == 0 && count == dst.len() {
        return next.pread(dst, count, offset, CmdFlags::empty());
    }
    dst.write(at, &read_below(next, offset, count)?);
    Ok(())
}

/// Write `data` at `offset` of the layer below.
pub fn write_below(next: &Next, data: Vec<u8>, offset: u64, flags: CmdFlags) -> Result<()> {
    let count = data.len() as u32;
    next.pwrite(&WriteBuf::new(&data), count, offset, flags)
}

/// `[offset, end)` of the layer below as a byte stream (for decoders), read `CHUNK` bytes
/// at a time.
pub struct BelowReader<'a> {
    next: &'a Next,
    offset: u64,
    end: u64,
}

impl<'a> BelowReader<'a> {
    const CHUNK: u64 = 1 << 20;

    pub fn new(next: &'a Next, offset: u64, end: u64) -> BelowReader<'a> {
        BelowReader { next, offset, end }
    }
}

impl std::io::Read for BelowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.end - self.offset).min(buf.len() as u64).min(Self::CHUNK) as usize;
        if n == 0 {
            return Ok(0);
        }
        let bytes = read_below(self.next, self.offset, n as u32)
            .map_err(|e| std::io::Error::other(format!("reading below failed: {:?}", e.errno)))?;
        buf[..n].copy_from_slice(&bytes);
        self.offset += n as u64;
        Ok(n)
    }
}
