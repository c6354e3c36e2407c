//! nbdkit's sparse allocator (common/allocators/sparse.c): 32 KiB pages that exist once
//! written. Its page-level rules are visible to clients through block status, so they are
//! kept exactly: a write allocates pages even for zeros, zeroing frees a page once all of it
//! is zero, a blit frees a destination page left all zero, and an allocated page reports
//! "zero" when it is zero from the offset asked for to its end, "data" otherwise.

use std::collections::BTreeMap;

pub const PAGE: u64 = 32768;
const PAGE_LEN: usize = PAGE as usize;

/// An extent: offset, length, hole, zero.
pub type Span = (u64, u64, bool, bool);

#[derive(Default)]
pub struct Sparse {
    pages: BTreeMap<u64, Box<[u8]>>,
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// The page of `offset`, the offset within it and how many bytes of a `count` fit in it.
fn split(offset: u64, count: u64) -> (u64, usize, usize) {
    let within = (offset % PAGE) as usize;
    (offset / PAGE, within, (PAGE_LEN - within).min(count.min(PAGE) as usize))
}

impl Sparse {
    fn page_mut(&mut self, index: u64) -> &mut [u8] {
        self.pages
            .entry(index)
            .or_insert_with(|| vec![0; PAGE_LEN].into_boxed_slice())
    }

    /// `buf.len()` bytes from `offset`; missing pages read as zeros.
    pub fn read(&self, buf: &mut [u8], mut offset: u64) {
        let mut at = 0;
        while at < buf.len() {
            let (index, within, n) = split(offset, (buf.len() - at) as u64);
            match self.pages.get(&index) {
                Some(page) => buf[at..at + n].copy_from_slice(&page[within..within + n]),
                None => buf[at..at + n].fill(0),
            }
            at += n;
            offset += n as u64;
        }
    }

    pub fn write(&mut self, data: &[u8], mut offset: u64) {
        let mut at = 0;
        while at < data.len() {
            let (index, within, n) = split(offset, (data.len() - at) as u64);
            self.page_mut(index)[within..within + n].copy_from_slice(&data[at..at + n]);
            at += n;
            offset += n as u64;
        }
    }

    /// `count` bytes of `byte`; zero is [`Sparse::zero`], as in sparse.c.
    pub fn fill(&mut self, byte: u8, mut count: u64, mut offset: u64) {
        if byte == 0 {
            return self.zero(count, offset);
        }
        while count > 0 {
            let (index, within, n) = split(offset, count);
            self.page_mut(index)[within..within + n].fill(byte);
            count -= n as u64;
            offset += n as u64;
        }
    }

    pub fn zero(&mut self, mut count: u64, mut offset: u64) {
        while count > 0 {
            let (index, within, n) = split(offset, count);
            if let Some(page) = self.pages.get_mut(&index) {
                page[within..within + n].fill(0);
                if n == PAGE_LEN || is_zero(page) {
                    self.pages.remove(&index);
                }
            }
            count -= n as u64;
            offset += n as u64;
        }
    }

    /// Copy `count` bytes of `src` from `from` to `to`, holes included (as zeros).
    pub fn blit(&mut self, src: &Sparse, mut count: u64, mut from: u64, mut to: u64) {
        while count > 0 {
            let (index, within, n) = split(to, count);
            let page = self.page_mut(index);
            src.read(&mut page[within..within + n], from);
            if is_zero(page) {
                self.pages.remove(&index);
            }
            count -= n as u64;
            from += n as u64;
            to += n as u64;
        }
    }

    /// sparse.c's extents: page by page from `offset` (each to the end of its page), merged
    /// when alike, until `count` bytes are covered.
    pub fn extents(&self, mut count: u64, mut offset: u64) -> Vec<Span> {
        let mut out: Vec<Span> = Vec::new();
        while count > 0 {
            let (index, within, _) = split(offset, count);
            let n = PAGE - within as u64;
            let (hole, zero) = match self.pages.get(&index) {
                None => (true, true),
                Some(page) => (false, is_zero(&page[within..])),
            };
            match out.last_mut() {
                Some(last) if last.2 == hole && last.3 == zero => last.1 += n,
                _ => out.push((offset, n, hole, zero)),
            }
            count = count.saturating_sub(n);
            offset += n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_written_are_data_zeros_filled_are_holes() {
        let mut s = Sparse::default();
        s.write(&[0, 0], 10);
        assert_eq!(s.extents(PAGE, 0), vec![(0, PAGE, false, true)]);
        s.fill(0, 5, 40_000);
        assert_eq!(
            s.extents(2 * PAGE, 0),
            vec![(0, PAGE, false, true), (PAGE, PAGE, true, true)]
        );
        s.write(&[1], PAGE + 3);
        assert_eq!(s.extents(10, PAGE + 3), vec![(PAGE + 3, PAGE - 3, false, false)]);
        assert_eq!(s.extents(10, PAGE + 4), vec![(PAGE + 4, PAGE - 4, false, true)]);
    }

    #[test]
    fn zeroing_frees_pages_that_become_zero() {
        let mut s = Sparse::default();
        s.write(&[7; 100], 0);
        s.zero(50, 0);
        assert_eq!(s.pages.len(), 1);
        s.zero(50, 50);
        assert!(s.pages.is_empty());
    }

    #[test]
    fn blit_copies_holes_as_zeros() {
        let mut src = Sparse::default();
        src.write(&[5; 4], 2);
        let mut dst = Sparse::default();
        dst.write(&[9; 8], 100);
        dst.blit(&src, 8, 0, 100);
        let mut buf = [1; 8];
        dst.read(&mut buf, 100);
        assert_eq!(buf, [0, 0, 5, 5, 5, 5, 0, 0]);
        let empty = Sparse::default();
        dst.blit(&empty, 8, 0, 100);
        assert!(dst.pages.is_empty(), "a page left all zero is freed");
    }
}
