//! A packed map of 2-bit states, one per block (nbdkit's common/bitmap with 2 bits per
//! block): four states are what the cow overlay (below, data, zero, trimmed) and the cache
//! (absent, clean, dirty) need. Blocks past the end read as state 0.

#[derive(Default)]
pub struct BlockMap {
    bits: Vec<u8>,
    blocks: u64,
}

const PER_BYTE: u64 = 4;

impl BlockMap {
    /// A map of `blocks` blocks, all in state 0.
    pub fn new(blocks: u64) -> BlockMap {
        let mut map = BlockMap::default();
        map.resize(blocks);
        map
    }

    /// Grow (new blocks in state 0) or shrink the map.
    pub fn resize(&mut self, blocks: u64) {
        let bytes = usize::try_from(blocks.div_ceil(PER_BYTE)).expect("block map fits in memory");
        self.bits.resize(bytes, 0);
        if blocks < self.blocks {
            // Clear the states past the new end that share its last byte.
            for block in blocks..(blocks.next_multiple_of(PER_BYTE)).min(self.blocks) {
                self.set(block, 0);
            }
        }
        self.blocks = blocks;
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    fn slot(block: u64) -> (usize, u32) {
        ((block / PER_BYTE) as usize, ((block % PER_BYTE) * 2) as u32)
    }

    pub fn get(&self, block: u64) -> u8 {
        if block >= self.blocks {
            return 0;
        }
        let (byte, shift) = Self::slot(block);
        (self.bits[byte] >> shift) & 3
    }

    /// Set one block's state (`state` < 4); blocks past the end are ignored.
    pub fn set(&mut self, block: u64, state: u8) {
        debug_assert!(state < 4);
        if block >= self.blocks {
            return;
        }
        let (byte, shift) = Self::slot(block);
        self.bits[byte] = (self.bits[byte] & !(3 << shift)) | (state << shift);
    }

    pub fn set_range(&mut self, first: u64, count: u64, state: u8) {
        for block in first..first.saturating_add(count).min(self.blocks) {
            self.set(block, state);
        }
    }

    /// How many blocks from `first` (at least 1, at most `limit`, not past the end) share
    /// `first`'s state, and that state.
    pub fn run(&self, first: u64, limit: u64) -> (u8, u64) {
        let state = self.get(first);
        let mut len = 1;
        while len < limit && first + len < self.blocks && self.get(first + len) == state {
            len += 1;
        }
        (state, len)
    }

    /// How many blocks are in `state`.
    pub fn count(&self, state: u8) -> u64 {
        (0..self.blocks).filter(|&b| self.get(b) == state).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_independent_and_runs_stop_at_changes() {
        let mut map = BlockMap::new(10);
        map.set(0, 1);
        map.set(1, 3);
        map.set_range(4, 3, 2);
        assert_eq!(
            (0..10).map(|b| map.get(b)).collect::<Vec<_>>(),
            [1, 3, 0, 0, 2, 2, 2, 0, 0, 0]
        );
        assert_eq!(map.run(4, 10), (2, 3));
        assert_eq!(map.run(4, 2), (2, 2));
        assert_eq!(map.run(7, 10), (0, 3), "a run ends at the map's end");
        assert_eq!(map.count(2), 3);
        assert_eq!(map.get(10), 0, "past the end reads as 0");
        map.set(12, 3);
        assert_eq!(map.get(12), 0, "past the end is ignored");
    }

    #[test]
    fn shrinking_forgets_and_growing_starts_at_zero() {
        let mut map = BlockMap::new(8);
        map.set_range(0, 8, 3);
        map.resize(5);
        map.resize(8);
        assert_eq!((0..8).map(|b| map.get(b)).collect::<Vec<_>>(), [3, 3, 3, 3, 3, 0, 0, 0]);
    }
}
