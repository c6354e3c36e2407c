//! An extent list built in order, merging neighbours of the same type (what nbdkit's
//! nbdkit_add_extent does), with the layer below's extents clipped and moved into place.

use nbdbox_filter_sdk::{Extent, ExtentFlags};

#[derive(Default, Debug)]
pub struct ExtentList {
    extents: Vec<Extent>,
}

impl ExtentList {
    pub fn new() -> ExtentList {
        ExtentList::default()
    }

    /// Append `[offset, offset + length)`; it must start where the list ends.
    pub fn push(&mut self, offset: u64, length: u64, flags: ExtentFlags) {
        if length == 0 {
            return;
        }
        match self.extents.last_mut() {
            Some(last) if last.flags == flags && last.offset + last.length == offset => last.length += length,
            _ => self.extents.push(Extent { offset, length, flags }),
        }
    }

    /// Append the part of `below` (extents in the layer below's coordinates) that falls in
    /// `[start, end)` there, moved down by `shift` (our offset = theirs - shift).
    pub fn push_below(&mut self, below: &[Extent], start: u64, end: u64, shift: u64) {
        for e in below {
            let from = e.offset.max(start);
            let to = (e.offset + e.length).min(end);
            if from < to {
                self.push(from - shift, to - from, e.flags);
            }
        }
    }

    /// Where the list ends (0 when empty).
    pub fn end(&self) -> u64 {
        self.extents.last().map_or(0, |e| e.offset + e.length)
    }

    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    pub fn into_vec(self) -> Vec<Extent> {
        self.extents
    }
}

/// `extents` (contiguous, starting on a multiple of `align`) made of whole `align`-sized
/// blocks, as nbdkit's nbdkit_extents_aligned: a block that several extents share gets the
/// flags they all have (a hole only if all of it is). A last block the list does not cover
/// to its end is left out, unless it is the only one.
pub fn aligned(extents: &[Extent], align: u64) -> Vec<Extent> {
    let mut list = ExtentList::new();
    let Some(first) = extents.first() else {
        return Vec::new();
    };
    let end = extents.last().map_or(0, |e| e.offset + e.length);
    let mut pos = first.offset;
    let mut i = 0;
    while pos < end {
        let e = &extents[i];
        let e_end = e.offset + e.length;
        if e_end - pos >= align {
            // Whole blocks inside one extent.
            let len = (e_end - pos) / align * align;
            list.push(pos, len, e.flags);
            pos += len;
            if pos == e_end {
                i += 1;
            }
            continue;
        }
        // A block that ends inside a later extent, or past the list.
        let block_end = pos + align;
        if block_end > end {
            if list.is_empty() {
                list.push(pos, end - pos, extents[i..].iter().fold(e.flags, |f, e| f & e.flags));
            }
            break;
        }
        let mut flags = ExtentFlags::all();
        while i < extents.len() && extents[i].offset < block_end {
            flags &= extents[i].flags;
            if extents[i].offset + extents[i].length > block_end {
                break;
            }
            i += 1;
        }
        list.push(pos, align, flags);
        pos = block_end;
    }
    list.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Plain = (u64, u64, ExtentFlags);

    fn e((offset, length, flags): Plain) -> Extent {
        Extent { offset, length, flags }
    }

    fn plain(list: Vec<Extent>) -> Vec<Plain> {
        list.into_iter().map(|x| (x.offset, x.length, x.flags)).collect()
    }

    const HOLE: ExtentFlags = ExtentFlags::HOLE.union(ExtentFlags::ZERO);
    const DATA: ExtentFlags = ExtentFlags::empty();

    #[test]
    fn neighbours_of_one_type_merge() {
        let mut list = ExtentList::new();
        list.push(0, 10, HOLE);
        list.push(10, 5, HOLE);
        list.push(15, 0, DATA);
        list.push(15, 5, DATA);
        assert_eq!(list.end(), 20);
        assert_eq!(plain(list.into_vec()), [(0, 15, HOLE), (15, 5, DATA)]);
    }

    #[test]
    fn aligned_blocks_take_the_flags_all_their_parts_have() {
        let list = [(0, 65536, HOLE), (65536, 8192, DATA), (73728, 200000, HOLE)].map(e);
        assert_eq!(
            plain(aligned(&list, 65536)),
            [(0, 65536, HOLE), (65536, 65536, DATA), (131072, 131072, HOLE)],
            "the partial last block is left out"
        );
        assert_eq!(
            plain(aligned(&list, 512)),
            [(0, 65536, HOLE), (65536, 8192, DATA), (73728, 199680, HOLE)]
        );
        let short = [(0, 100, HOLE), (100, 50, ExtentFlags::ZERO)].map(e);
        assert_eq!(plain(aligned(&short, 4096)), [(0, 150, ExtentFlags::ZERO)]);
    }

    #[test]
    fn below_is_clipped_and_shifted() {
        let below = [(0, 100, ExtentFlags::ZERO), (100, 100, DATA)].map(e);
        let mut list = ExtentList::new();
        list.push_below(&below, 50, 150, 50);
        assert_eq!(plain(list.into_vec()), [(0, 50, ExtentFlags::ZERO), (50, 50, DATA)]);
    }
}
