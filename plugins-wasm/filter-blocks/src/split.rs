//! Splitting a request at block boundaries: an unaligned head, whole blocks, an unaligned
//! tail (the loop shape of nbdkit's filters/blocksize/blocksize.c and filters/cow/cow.c).

/// One piece of a request, in request order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Where the piece starts on the disk.
    pub offset: u64,
    pub len: u64,
    /// Where the piece starts in the request's buffer.
    pub at: u64,
}

/// A request `[offset, offset + count)` split for blocks of `block` bytes (a power of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// The part before the first block boundary, inside one block.
    pub head: Option<Piece>,
    /// Whole, aligned blocks.
    pub body: Option<Piece>,
    /// The part after the last block boundary, inside one block.
    pub tail: Option<Piece>,
}

impl Split {
    pub fn new(offset: u64, count: u64, block: u64) -> Split {
        debug_assert!(block.is_power_of_two());
        let end = offset + count;
        let mask = block - 1;
        let head_end = ((offset + mask) & !mask).min(end);
        let body_end = (end & !mask).max(head_end);
        let piece = |start: u64, stop: u64| {
            (start < stop).then_some(Piece {
                offset: start,
                len: stop - start,
                at: start - offset,
            })
        };
        Split {
            head: piece(offset, head_end),
            body: piece(head_end, body_end),
            tail: piece(body_end, end),
        }
    }

    /// Whether the request is all whole blocks.
    pub fn is_aligned(&self) -> bool {
        self.head.is_none() && self.tail.is_none()
    }
}

impl Piece {
    /// The piece cut into parts of at most `max` bytes (`max` > 0), in order.
    pub fn chunks(self, max: u64) -> impl Iterator<Item = Piece> {
        let step = max.max(1);
        (0..self.len.div_ceil(step)).map(move |i| {
            let skip = i * step;
            Piece {
                offset: self.offset + skip,
                len: (self.len - skip).min(step),
                at: self.at + skip,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: u64, len: u64, at: u64) -> Option<Piece> {
        Some(Piece { offset, len, at })
    }

    #[test]
    fn head_body_tail() {
        assert_eq!(
            Split::new(100, 1000, 512),
            Split {
                head: p(100, 412, 0),
                body: p(512, 512, 412),
                tail: p(1024, 76, 924)
            }
        );
        assert_eq!(
            Split::new(0, 1024, 512),
            Split {
                head: None,
                body: p(0, 1024, 0),
                tail: None
            }
        );
        assert!(Split::new(0, 1024, 512).is_aligned());
    }

    #[test]
    fn inside_one_block_is_all_head() {
        assert_eq!(
            Split::new(10, 20, 512),
            Split {
                head: p(10, 20, 0),
                body: None,
                tail: None
            }
        );
        // Ending exactly on a boundary: head only.
        assert_eq!(
            Split::new(500, 12, 512),
            Split {
                head: p(500, 12, 0),
                body: None,
                tail: None
            }
        );
        // Starting on a boundary, ending inside the block: tail only.
        assert_eq!(
            Split::new(512, 12, 512),
            Split {
                head: None,
                body: None,
                tail: p(512, 12, 0)
            }
        );
    }

    #[test]
    fn chunks_cover_the_piece() {
        let parts: Vec<_> = Piece {
            offset: 1000,
            len: 25,
            at: 5,
        }
        .chunks(10)
        .collect();
        assert_eq!(
            parts,
            [
                Piece {
                    offset: 1000,
                    len: 10,
                    at: 5
                },
                Piece {
                    offset: 1010,
                    len: 10,
                    at: 15
                },
                Piece {
                    offset: 1020,
                    len: 5,
                    at: 25
                }
            ]
        );
    }
}
