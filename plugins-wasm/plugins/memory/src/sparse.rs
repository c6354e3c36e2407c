//! A sparse byte array of 32 KiB pages kept in an ordered map keyed by page index.
//!
//! Plain Rust (no WIT types) so it can be unit-tested natively. Offsets are `u64` throughout;
//! only offsets *within one page* are ever converted to `usize`. Missing pages read as zeros.
//! Allocation is bounded by a page budget and uses `try_reserve_exact`, so running out of
//! memory is an error ([`NoSpace`]), never a trap.

use std::collections::BTreeMap;

/// Page size in bytes (nbdkit's sparse allocator uses the same).
pub const PAGE_SIZE: u64 = 32768;
const PAGE: usize = PAGE_SIZE as usize;

/// What one page costs against the budget: the page plus allocator and map overhead.
pub const PAGE_COST: u64 = PAGE_SIZE + 64;

/// A write would need more pages than the budget (or the allocator) allows.
#[derive(Debug, PartialEq, Eq)]
pub struct NoSpace;

/// Why a write failed.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError<E> {
    NoSpace,
    /// The data source failed.
    Source(E),
}

/// One piece of a read, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// This many zero bytes.
    Zero(u32),
    /// These bytes.
    Data(&'a [u8]),
}

/// base:allocation class of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No page: reads as zero (hole|zero).
    Hole,
    /// An allocated page that is all zero.
    Zero,
    /// An allocated page with data.
    Data,
}

/// An extent as (offset, length, kind).
pub type Span = (u64, u64, Kind);

#[derive(Default)]
pub struct Sparse {
    pages: BTreeMap<u64, Box<[u8]>>,
    max_pages: u64,
}

fn is_zero(buf: &[u8]) -> bool {
    let words = buf.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .all(|w| w == 0)
        && tail.iter().all(|&b| b == 0)
}

fn page_start(index: u64) -> u64 {
    index * PAGE_SIZE
}

/// The part of page `index` inside [offset, end), as in-page byte positions.
fn clip(index: u64, offset: u64, end: u64) -> (u64, u64, usize, usize) {
    let start = page_start(index);
    let s = start.max(offset);
    let e = start.saturating_add(PAGE_SIZE).min(end);
    // Both are within one page, so the conversions cannot truncate.
    (s, e, (s - start) as usize, (e - start) as usize)
}

/// First and last page index touched by [offset, offset + len), or None when empty.
fn page_span(offset: u64, len: u64) -> Option<(u64, u64, u64)> {
    if len == 0 {
        return None;
    }
    let end = offset.saturating_add(len);
    if end == offset {
        return None;
    }
    Some((offset / PAGE_SIZE, (end - 1) / PAGE_SIZE, end))
}

fn alloc_page() -> Result<Box<[u8]>, NoSpace> {
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(PAGE).map_err(|_| NoSpace)?;
    v.resize(PAGE, 0);
    Ok(v.into_boxed_slice())
}

impl Sparse {
    /// An empty array that may hold at most `max_pages` pages.
    pub const fn new(max_pages: u64) -> Self {
        Sparse {
            pages: BTreeMap::new(),
            max_pages,
        }
    }

    /// Pages currently allocated.
    pub fn allocated_pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Hand [offset, offset + len) to `out` in order, as zero runs and data slices.
    pub fn read(&self, offset: u64, len: u32, mut out: impl FnMut(Chunk<'_>)) {
        let Some((first, last, end)) = page_span(offset, u64::from(len)) else {
            return;
        };
        let mut pos = offset;
        for (&index, page) in self.pages.range(first..=last) {
            let (s, e, a, b) = clip(index, offset, end);
            if s > pos {
                out(Chunk::Zero((s - pos) as u32));
            }
            out(Chunk::Data(&page[a..b]));
            pos = e;
        }
        if end > pos {
            out(Chunk::Zero((end - pos) as u32));
        }
    }

    /// Write [offset, offset + len); `fill(at, dst)` copies request bytes [at, at + dst.len())
    /// into `dst`. Every page needed is allocated first, so a write that runs out of space
    /// changes nothing.
    pub fn write<E>(
        &mut self,
        offset: u64,
        len: u32,
        mut fill: impl FnMut(u32, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        let Some((first, last, end)) = page_span(offset, u64::from(len)) else {
            return Ok(());
        };
        let present = self.pages.range(first..=last).count() as u64;
        let missing = (last - first + 1) - present;
        if self.allocated_pages() + missing > self.max_pages {
            return Err(WriteError::NoSpace);
        }
        if missing > 0 {
            let mut fresh: Vec<(u64, Box<[u8]>)> = Vec::new();
            fresh
                .try_reserve_exact(missing as usize)
                .map_err(|_| WriteError::NoSpace)?;
            for index in first..=last {
                if !self.pages.contains_key(&index) {
                    fresh.push((index, alloc_page().map_err(|_| WriteError::NoSpace)?));
                }
            }
            self.pages.extend(fresh);
        }
        for index in first..=last {
            let (s, _, a, b) = clip(index, offset, end);
            let page = self.pages.get_mut(&index).expect("page allocated above");
            fill((s - offset) as u32, &mut page[a..b]).map_err(WriteError::Source)?;
        }
        Ok(())
    }

    /// Zero (and trim) [offset, offset + len): whole pages are freed, partial pages are
    /// cleared and freed once they are all zero. Never allocates.
    pub fn zero(&mut self, offset: u64, len: u64) {
        let Some((first, last, end)) = page_span(offset, len) else {
            return;
        };
        let mut cursor = first;
        while cursor <= last {
            let Some(index) = self.pages.range(cursor..=last).next().map(|(&k, _)| k) else {
                break;
            };
            let (_, _, a, b) = clip(index, offset, end);
            if a == 0 && b == PAGE {
                self.pages.remove(&index);
            } else if let Some(page) = self.pages.get_mut(&index) {
                page[a..b].fill(0);
                if is_zero(page) {
                    self.pages.remove(&index);
                }
            }
            cursor = index + 1;
        }
    }

    /// Extents covering exactly [offset, offset + len), ascending, contiguous, adjacent
    /// extents of the same kind merged. With `req_one` only the first is returned.
    pub fn extents(&self, offset: u64, len: u64, req_one: bool) -> Vec<Span> {
        let mut out: Vec<Span> = Vec::new();
        let Some((first, last, end)) = page_span(offset, len) else {
            return out;
        };
        let push = |out: &mut Vec<Span>, s: u64, e: u64, kind: Kind| {
            if e <= s {
                return;
            }
            match out.last_mut() {
                Some(prev) if prev.2 == kind && prev.0 + prev.1 == s => prev.1 += e - s,
                _ => out.push((s, e - s, kind)),
            }
        };
        let mut pos = offset;
        for (&index, page) in self.pages.range(first..=last) {
            let (s, e, _, _) = clip(index, offset, end);
            push(&mut out, pos, s, Kind::Hole);
            let kind = if is_zero(page) { Kind::Zero } else { Kind::Data };
            push(&mut out, s, e, kind);
            pos = e;
            if req_one && out.len() > 1 {
                out.truncate(1);
                return out;
            }
        }
        push(&mut out, pos, end, Kind::Hole);
        if req_one {
            out.truncate(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bytes(s: &mut Sparse, offset: u64, data: &[u8]) -> Result<(), WriteError<()>> {
        s.write(offset, data.len() as u32, |at, dst| {
            let at = at as usize;
            dst.copy_from_slice(&data[at..at + dst.len()]);
            Ok(())
        })
    }

    fn read_bytes(s: &Sparse, offset: u64, len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        s.read(offset, len, |c| match c {
            Chunk::Zero(n) => v.extend(std::iter::repeat_n(0, n as usize)),
            Chunk::Data(d) => v.extend_from_slice(d),
        });
        assert_eq!(v.len(), len as usize);
        v
    }

    fn check_contiguous(ext: &[Span], offset: u64, len: u64) {
        assert_eq!(ext[0].0, offset);
        for w in ext.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0);
            assert_ne!(w[0].2, w[1].2);
        }
        let last = ext.last().unwrap();
        assert_eq!(last.0 + last.1, offset + len);
    }

    #[test]
    fn unwritten_reads_zero() {
        let s = Sparse::new(10);
        assert_eq!(read_bytes(&s, 12345, 100_000), vec![0; 100_000]);
        let mut chunks = 0;
        s.read(0, 1 << 20, |_| chunks += 1);
        assert_eq!(chunks, 1);
    }

    #[test]
    fn write_read_across_pages_and_high_offsets() {
        let mut s = Sparse::new(100);
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let off = PAGE_SIZE - 100;
        write_bytes(&mut s, off, &data).unwrap();
        assert_eq!(s.allocated_pages(), 4);
        assert_eq!(read_bytes(&s, off, data.len() as u32), data);
        assert_eq!(read_bytes(&s, off - 10, 10), vec![0; 10]);
        // Near 2^63: no truncation to 32 bits.
        let hi = (1u64 << 63) - 512;
        write_bytes(&mut s, hi, &[7; 512]).unwrap();
        assert_eq!(read_bytes(&s, hi, 512), vec![7; 512]);
        assert_eq!(read_bytes(&s, hi & 0xffff_ffff, 512), vec![0; 512]);
        let one_tb = 1u64 << 40;
        write_bytes(&mut s, one_tb, &[9; 4]).unwrap();
        assert_eq!(read_bytes(&s, 0, 4), vec![0; 4]);
    }

    #[test]
    fn budget_is_enforced_atomically() {
        let mut s = Sparse::new(2);
        write_bytes(&mut s, 0, &[1; 10]).unwrap();
        let big = vec![2u8; 2 * PAGE];
        assert_eq!(write_bytes(&mut s, 10 * PAGE_SIZE, &big), Err(WriteError::NoSpace));
        assert_eq!(s.allocated_pages(), 1);
        assert_eq!(read_bytes(&s, 10 * PAGE_SIZE, 4), vec![0; 4]);
        // Rewriting an existing page needs no new space.
        write_bytes(&mut s, 5, &[3; 100]).unwrap();
        s.zero(0, PAGE_SIZE);
        assert_eq!(s.allocated_pages(), 0);
        write_bytes(&mut s, 10 * PAGE_SIZE, &big).unwrap();
    }

    #[test]
    fn zero_frees_pages() {
        let mut s = Sparse::new(100);
        write_bytes(&mut s, 0, &vec![5u8; 3 * PAGE]).unwrap();
        // Partial zero keeps the page.
        s.zero(100, 200);
        assert_eq!(s.allocated_pages(), 3);
        let mut expect = vec![5u8; 1000];
        expect[100..300].fill(0);
        assert_eq!(read_bytes(&s, 0, 1000), expect);
        // Whole middle page freed, the rest of the first page cleared and freed.
        s.zero(0, 2 * PAGE_SIZE);
        assert_eq!(s.allocated_pages(), 1);
        // Clearing the remaining page piecewise frees it.
        s.zero(2 * PAGE_SIZE, 1000);
        s.zero(2 * PAGE_SIZE + 1000, PAGE_SIZE - 1000);
        assert_eq!(s.allocated_pages(), 0);
        // Huge ranges are fine.
        s.zero(0, u64::MAX);
        s.zero(u64::MAX - 5, 100);
    }

    #[test]
    fn extents_classify_and_merge() {
        let mut s = Sparse::new(100);
        write_bytes(&mut s, PAGE_SIZE, &[1; 4]).unwrap();
        write_bytes(&mut s, 3 * PAGE_SIZE, &[0; 4]).unwrap(); // allocated zeros
        write_bytes(&mut s, 4 * PAGE_SIZE, &[1; 4]).unwrap();
        write_bytes(&mut s, 5 * PAGE_SIZE, &[1; 4]).unwrap();
        let len = 8 * PAGE_SIZE;
        let e = s.extents(0, len, false);
        check_contiguous(&e, 0, len);
        assert_eq!(
            e,
            vec![
                (0, PAGE_SIZE, Kind::Hole),
                (PAGE_SIZE, PAGE_SIZE, Kind::Data),
                (2 * PAGE_SIZE, PAGE_SIZE, Kind::Hole),
                (3 * PAGE_SIZE, PAGE_SIZE, Kind::Zero),
                (4 * PAGE_SIZE, 2 * PAGE_SIZE, Kind::Data),
                (6 * PAGE_SIZE, 2 * PAGE_SIZE, Kind::Hole),
            ]
        );
        let e = s.extents(PAGE_SIZE + 7, 5 * PAGE_SIZE, false);
        check_contiguous(&e, PAGE_SIZE + 7, 5 * PAGE_SIZE);
        assert_eq!(e[0], (PAGE_SIZE + 7, PAGE_SIZE - 7, Kind::Data));
        assert_eq!(s.extents(10, len, true), vec![(10, PAGE_SIZE - 10, Kind::Hole)]);
        assert_eq!(
            s.extents(4 * PAGE_SIZE, len, true),
            vec![(4 * PAGE_SIZE, 2 * PAGE_SIZE, Kind::Data)]
        );
        assert_eq!(Sparse::new(1).extents(5, 1 << 40, true), vec![(5, 1 << 40, Kind::Hole)]);
        let e = s.extents(0, u64::from(u32::MAX), false);
        check_contiguous(&e, 0, u64::from(u32::MAX));
    }
}
