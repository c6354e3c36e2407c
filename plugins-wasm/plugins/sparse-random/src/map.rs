//! Which 4 KiB blocks of a sparse-random disk hold data, drawn exactly as nbdkit's
//! plugins/sparse-random/sparse-random.c draws them, and what a block holds. Plain Rust,
//! unit-tested natively.

use xrandom::Xoshiro;

/// The block size of nbdkit's bitmap: one bit per 4 KiB.
pub const BLOCK: u64 = 4096;

/// One bit per block: set for data, clear for a hole.
pub struct DataMap {
    bits: Vec<u64>,
}

impl DataMap {
    /// The map of a disk of `size` bytes: `percent` of it data, in runs of `runlength` bytes
    /// on average. sparse-random.c walks the blocks as a two-state chain (hole, data), leaving
    /// the state it is in after each block with probability P_dh (data to hole) or P_hd (hole
    /// to data), one random number per block.
    pub fn new(size: u64, seed: u32, percent: f64, runlength: u64) -> DataMap {
        let blocks = size.div_ceil(BLOCK);
        let mut bits = vec![0u64; blocks.div_ceil(64) as usize];
        if percent == 100.0 {
            bits.iter_mut().for_each(|w| *w = u64::MAX);
        } else if percent != 0.0 {
            let p_dh = 1.0 / (runlength as f64 / BLOCK as f64);
            let p_hd = (percent / 100.0) * p_dh / (1.0 - percent / 100.0);
            let mut random = Xoshiro::new(u64::from(seed));
            let mut data = false;
            for block in 0..blocks {
                if data {
                    bits[(block / 64) as usize] |= 1 << (block % 64);
                }
                let p = if data { p_dh } else { p_hd };
                if random.next_u64() as f64 <= p * u64::MAX as f64 {
                    data = !data;
                }
            }
        }
        DataMap { bits }
    }

    pub fn is_data(&self, block: u64) -> bool {
        self.bits
            .get((block / 64) as usize)
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }
}

/// The bytes of data block `block` as sparse-random.c's read_block makes them, `offset` being
/// what it is given (the request's offset for a request's first block, which need not be
/// the block's start: nbdkit seeds from it all the same).
pub fn fill_block(out: &mut [u8; BLOCK as usize], seed: u32, offset: u64, random_content: bool) {
    let mut state = Xoshiro::new(u64::from(seed).wrapping_add(offset));
    if random_content {
        out.iter_mut().for_each(|b| *b = state.next_u64() as u8);
    } else {
        let byte = (state.next_u64() as u8).max(1);
        out.fill(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing() {
        let full = DataMap::new(10 * BLOCK + 1, 1, 100.0, 16 << 20);
        assert!((0..11).all(|b| full.is_data(b)));
        let empty = DataMap::new(10 * BLOCK, 1, 0.0, 16 << 20);
        assert!((0..10).all(|b| !empty.is_data(b)));
    }

    #[test]
    fn roughly_the_percentage_asked_for() {
        let map = DataMap::new(1 << 30, 42, 25.0, 1 << 20);
        let data = (0..(1u64 << 30) / BLOCK).filter(|&b| map.is_data(b)).count() as f64;
        let share = data / ((1u64 << 30) / BLOCK) as f64;
        assert!((0.15..0.35).contains(&share), "{share}");
    }

    #[test]
    fn data_blocks_are_never_zero() {
        let mut block = [0; BLOCK as usize];
        for offset in 0..64 {
            fill_block(&mut block, 3, offset * BLOCK, false);
            assert!(block.iter().all(|&b| b == block[0] && b != 0));
        }
    }
}
