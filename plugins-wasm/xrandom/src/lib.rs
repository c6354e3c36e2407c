//! The pseudo-random numbers of nbdkit's common/include/random.h: xoshiro256** 1.0, seeded
//! from a 64-bit seed by splitmix64. Plugins that promise the same bytes as nbdkit for the
//! same `seed=` (random, sparse-random) must draw exactly this sequence. Not for anything
//! that needs unpredictable numbers.

/// The generator's state (nbdkit's `struct random_state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xoshiro {
    s: [u64; 4],
}

/// splitmix64: one step of the seed sequence (random.h `snext`).
fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Xoshiro {
    /// random.h `xsrandom`: the state for a 64-bit seed.
    pub fn new(mut seed: u64) -> Xoshiro {
        Xoshiro {
            s: [
                splitmix(&mut seed),
                splitmix(&mut seed),
                splitmix(&mut seed),
                splitmix(&mut seed),
            ],
        }
    }

    /// random.h `xrandom`: 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // splitmix64 from seed 0: the published first outputs.
        let mut seed = 0;
        assert_eq!(splitmix(&mut seed), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix(&mut seed), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix(&mut seed), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn xoshiro_steps_as_the_reference_does() {
        // xoshiro256** from state {1, 2, 3, 4}: the reference implementation's outputs.
        let mut x = Xoshiro { s: [1, 2, 3, 4] };
        assert_eq!(x.next_u64(), 11520);
        assert_eq!(x.next_u64(), 0);
        assert_eq!(x.next_u64(), 1_509_978_240);
        assert_eq!(x.next_u64(), 1_215_971_899_390_074_240);
    }

    #[test]
    fn same_seed_same_numbers() {
        let mut a = Xoshiro::new(42);
        let mut b = Xoshiro::new(42);
        let mut c = Xoshiro::new(43);
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
