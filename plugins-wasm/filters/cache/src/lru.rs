//! Least-recently-used order of the cached blocks (nbdkit's filters/cache/lru.c keeps two
//! bitmaps; an ordered map says exactly which block is oldest). Plain Rust, unit-tested.

use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
pub struct Lru {
    clock: u64,
    by_block: HashMap<u64, u64>,
    by_time: BTreeMap<u64, u64>,
}

impl Lru {
    /// `block` was used now.
    pub fn touch(&mut self, block: u64) {
        self.clock += 1;
        if let Some(old) = self.by_block.insert(block, self.clock) {
            self.by_time.remove(&old);
        }
        self.by_time.insert(self.clock, block);
    }

    pub fn remove(&mut self, block: u64) {
        if let Some(time) = self.by_block.remove(&block) {
            self.by_time.remove(&time);
        }
    }

    /// The least recently used block.
    pub fn oldest(&self) -> Option<u64> {
        self.by_time.values().next().copied()
    }

    /// How many blocks are cached.
    pub fn len(&self) -> u64 {
        self.by_block.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_is_the_least_recently_touched() {
        let mut lru = Lru::default();
        for block in [5, 1, 9] {
            lru.touch(block);
        }
        assert_eq!(lru.oldest(), Some(5));
        lru.touch(5);
        assert_eq!(lru.oldest(), Some(1));
        lru.remove(1);
        assert_eq!((lru.oldest(), lru.len()), (Some(9), 2));
        lru.remove(9);
        lru.remove(5);
        assert_eq!(lru.oldest(), None);
    }
}
