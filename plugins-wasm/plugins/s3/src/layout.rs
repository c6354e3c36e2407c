//! How a striped disk maps onto objects, as nbdkit's S3 plugin lays it out: block N of
//! `object-size` bytes is the object `KEY/%016x` (N in 16 lower-case hex digits), and a
//! missing object reads as zeroes.

/// The object holding block `block` of the disk stored under `key`.
pub fn object_name(key: &str, block: u64) -> String {
    format!("{key}/{block:016x}")
}

/// The part of one object that a request touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub block: u64,
    /// Where in the object it starts.
    pub within: u64,
    pub len: u64,
    /// Where in the request's buffer it starts.
    pub at: u64,
}

impl Piece {
    pub fn is_whole(&self, object_size: u64) -> bool {
        self.within == 0 && self.len == object_size
    }
}

/// The pieces of [offset, offset + count), object by object.
pub fn pieces(offset: u64, count: u64, object_size: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < count {
        let position = offset + at;
        let within = position % object_size;
        let len = (object_size - within).min(count - at);
        out.push(Piece {
            block: position / object_size,
            within,
            len,
            at,
        });
        at += len;
    }
    out
}

/// The pieces of [offset, offset + count) that are not whole objects: at most the first
/// and the last (for a zero of any size, without listing every object between).
pub fn partial_ends(offset: u64, count: u64, object_size: u64) -> Vec<Piece> {
    let end = offset + count;
    let mut out = Vec::new();
    let within = offset % object_size;
    let len = (object_size - within).min(count);
    if len < object_size {
        out.push(Piece {
            block: offset / object_size,
            within,
            len,
            at: 0,
        });
    }
    let tail_start = end - end % object_size;
    if !end.is_multiple_of(object_size) && tail_start > offset {
        out.push(Piece {
            block: end / object_size,
            within: 0,
            len: end % object_size,
            at: tail_start - offset,
        });
    }
    out
}

/// The blocks wholly inside [offset, offset + count): the objects a trim may delete.
pub fn whole_blocks(offset: u64, count: u64, object_size: u64) -> std::ops::Range<u64> {
    let first = offset.div_ceil(object_size);
    let end = (offset + count) / object_size;
    first..end.max(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nbdkits() {
        assert_eq!(object_name("disk", 0), "disk/0000000000000000");
        assert_eq!(object_name("a/b", 0x1f), "a/b/000000000000001f");
    }

    #[test]
    fn a_request_splits_at_object_boundaries() {
        assert_eq!(
            pieces(10, 30, 16),
            vec![
                Piece {
                    block: 0,
                    within: 10,
                    len: 6,
                    at: 0
                },
                Piece {
                    block: 1,
                    within: 0,
                    len: 16,
                    at: 6
                },
                Piece {
                    block: 2,
                    within: 0,
                    len: 8,
                    at: 22
                },
            ]
        );
        let aligned = pieces(32, 16, 16);
        assert_eq!(aligned.len(), 1);
        assert!(aligned[0].is_whole(16));
        assert!(!pieces(33, 15, 16)[0].is_whole(16));
    }

    #[test]
    fn the_partial_ends_are_the_pieces_that_are_not_whole() {
        for offset in 0..40 {
            for count in 1..60 {
                let expected: Vec<Piece> = pieces(offset, count, 16)
                    .into_iter()
                    .filter(|p| !p.is_whole(16))
                    .collect();
                assert_eq!(partial_ends(offset, count, 16), expected, "{offset} +{count}");
            }
        }
        assert_eq!(partial_ends(8, 1 << 40, 16).len(), 2);
    }

    #[test]
    fn trims_round_inwards() {
        assert_eq!(whole_blocks(0, 48, 16), 0..3);
        assert_eq!(whole_blocks(1, 47, 16), 1..3);
        assert_eq!(whole_blocks(1, 46, 16), 1..2);
        assert_eq!(whole_blocks(1, 14, 16), 1..1);
        assert!(whole_blocks(17, 14, 16).is_empty());
    }
}
