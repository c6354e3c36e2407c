//! nbdkit's `allocator=malloc`: the whole disk as one allocation made at startup, so every
//! byte reads as data (no holes) and a write can never run out of memory later.
//!
//! Plain Rust, unit-tested natively, with the same read and write shapes as [`Sparse`].
//!
//! [`Sparse`]: crate::sparse::Sparse

use crate::sparse::{Chunk, NoSpace, WriteError};

pub struct Flat {
    bytes: Vec<u8>,
}

impl Flat {
    /// A zeroed disk of `size` bytes, or NoSpace when more than `max_bytes` or the allocator
    /// refuses.
    pub fn new(size: u64, max_bytes: u64) -> Result<Flat, NoSpace> {
        let len = usize::try_from(size).map_err(|_| NoSpace)?;
        if size > max_bytes {
            return Err(NoSpace);
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).map_err(|_| NoSpace)?;
        bytes.resize(len, 0);
        Ok(Flat { bytes })
    }

    fn range(&self, offset: u64, len: u64) -> std::ops::Range<usize> {
        // The host checked offset + len against the size, which is the length.
        let start = offset as usize;
        start..start + len as usize
    }

    pub fn read(&self, offset: u64, len: u32, mut out: impl FnMut(Chunk<'_>)) {
        out(Chunk::Data(&self.bytes[self.range(offset, u64::from(len))]));
    }

    /// `fill(0, dst)` copies the whole request into `dst`.
    pub fn write<E>(
        &mut self,
        offset: u64,
        len: u32,
        mut fill: impl FnMut(u32, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        let range = self.range(offset, u64::from(len));
        fill(0, &mut self.bytes[range]).map_err(WriteError::Source)
    }

    pub fn zero(&mut self, offset: u64, len: u64) {
        let range = self.range(offset, len);
        self.bytes[range].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written_and_zeroed() {
        let mut flat = Flat::new(100, 1000).unwrap();
        flat.write::<()>(10, 5, |at, dst| {
            assert_eq!(at, 0);
            dst.copy_from_slice(b"hello");
            Ok(())
        })
        .unwrap();
        flat.zero(11, 2);
        let mut seen = Vec::new();
        flat.read(9, 7, |chunk| match chunk {
            Chunk::Data(bytes) => seen.extend_from_slice(bytes),
            Chunk::Zero(_) => panic!("a flat disk has no holes"),
        });
        assert_eq!(seen, b"\0h\0\0lo\0");
    }

    #[test]
    fn refuses_more_than_the_budget() {
        assert!(Flat::new(1001, 1000).is_err());
        assert!(Flat::new(u64::MAX, u64::MAX).is_err());
    }
}
