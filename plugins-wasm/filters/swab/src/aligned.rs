//! Block status in whole units of `align` bytes, as nbdkit's nbdkit_extents_aligned
//! (server/extents.c) computes it for a filter whose requests must be aligned. Plain Rust
//! over plain extents, unit-tested natively.

/// One extent: offset, length and the base:allocation bits (hole = 1, zero = 2), whose
/// intersection is the safe type of a merged extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub length: u64,
    pub bits: u8,
}

/// The extents of `count` bytes at `offset` (both multiples of `align`) with every length a
/// multiple of `align`. `query(count, offset, req_one)` asks the layer below, which answers
/// from `offset` on, possibly past `count`. An extent that ends unaligned after the first
/// block is cut back to the block boundary and ends the list; one that ends inside the first
/// block is merged with what follows up to the block's end, keeping only the bits they share.
pub fn aligned_extents<E>(
    count: u64,
    offset: u64,
    req_one: bool,
    align: u64,
    mut query: impl FnMut(u64, u64, bool) -> Result<Vec<Span>, E>,
) -> Result<Vec<Span>, E> {
    let mut spans = query(count, offset, req_one)?;
    let Some(i) = spans.iter().position(|s| !s.length.is_multiple_of(align)) else {
        return Ok(spans);
    };
    let first_end = offset + align;
    let e = spans[i];
    if e.offset + e.length > first_end {
        let length = e.length - e.length % align;
        spans[i].length = length;
        spans.truncate(i + usize::from(length != 0));
        return Ok(spans);
    }
    // The unaligned extent ends inside the first block, so it is the first one.
    let mut merged = e;
    let mut rest: Vec<Span> = spans.split_off(i + 1);
    while merged.length < align {
        if let Some(next) = (!rest.is_empty()).then(|| rest.remove(0)) {
            merged.length += next.length;
            merged.bits &= next.bits;
        } else {
            let at = merged.offset + merged.length;
            let mut more = query(first_end - at, at, false)?;
            // The layer below may answer past the block: only the block counts here.
            more.retain(|s| s.offset < first_end);
            let Some(first) = more.first().copied() else {
                break;
            };
            merged.length += first.length;
            merged.bits &= first.bits;
            rest = more.split_off(1);
        }
    }
    merged.length = align;
    Ok(vec![merged])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: u64, length: u64, bits: u8) -> Span {
        Span { offset, length, bits }
    }

    /// A layer below whose map is `map` (contiguous from 0).
    fn below(map: Vec<Span>) -> impl FnMut(u64, u64, bool) -> Result<Vec<Span>, ()> {
        move |_count, offset, _req_one| {
            Ok(map
                .iter()
                .filter(|s| s.offset + s.length > offset)
                .map(|s| {
                    let start = s.offset.max(offset);
                    span(start, s.offset + s.length - start, s.bits)
                })
                .collect())
        }
    }

    #[test]
    fn aligned_maps_pass_through() {
        let map = vec![span(0, 8, 3), span(8, 16, 0)];
        assert_eq!(aligned_extents(24, 0, false, 8, below(map.clone())), Ok(map));
    }

    #[test]
    fn an_unaligned_end_past_the_first_block_is_cut_back() {
        let map = vec![span(0, 19, 3), span(19, 13, 0)];
        assert_eq!(aligned_extents(32, 0, false, 8, below(map)), Ok(vec![span(0, 16, 3)]));
    }

    #[test]
    fn an_unaligned_first_block_keeps_the_shared_bits() {
        let map = vec![span(0, 3, 3), span(3, 2, 2), span(5, 11, 3)];
        assert_eq!(aligned_extents(16, 0, false, 8, below(map)), Ok(vec![span(0, 8, 2)]));
    }

    #[test]
    fn the_first_block_is_completed_by_asking_again() {
        // REQ_ONE answers stop after one extent; the merge asks for the rest of the block.
        let map = vec![span(8, 1, 0), span(9, 7, 3), span(16, 8, 3)];
        let mut full = below(map);
        let mut calls = 0;
        let query = |count, offset, req_one: bool| {
            calls += 1;
            full(count, offset, req_one).map(|mut v| {
                if req_one {
                    v.truncate(1);
                }
                v
            })
        };
        assert_eq!(aligned_extents(16, 8, true, 8, query), Ok(vec![span(8, 8, 0)]));
        assert_eq!(calls, 2);
    }
}
