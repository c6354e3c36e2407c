//! random: nbdkit-random-plugin(1), a disk of random bytes that are the same for the same
//! `seed=` as nbdkit's (plugins/random/random.c): byte i is the third number of the
//! generator seeded with seed + i. Writes succeed only when they write what is there
//! already (EIO otherwise), so a copy to itself checks a copying program; trim and zero fail
//! with EIO. `[size=]SIZE` defaults to 0; without `seed=` the seed is the time, chosen once
//! for all instances.

use nbdbox_sdk::prelude::*;
use xrandom::Xoshiro;

#[derive(Default)]
struct Random {
    size: u64,
    seed: Option<u32>,
}

/// random.c's byte at `index` (offset + seed): three steps from a fresh seed.
fn byte_at(index: u64) -> u8 {
    let mut state = Xoshiro::new(index);
    state.next_u64();
    state.next_u64();
    state.next_u64() as u8
}

/// The disk's bytes from `offset` into `out`.
fn fill(out: &mut [u8], seed: u32, offset: u64) {
    let base = u64::from(seed).wrapping_add(offset);
    for (i, b) in out.iter_mut().enumerate() {
        *b = byte_at(base.wrapping_add(i as u64));
    }
}

impl Plugin for Random {
    const NAME: &'static str = "random";
    const DESCRIPTION: &'static str = "Random bytes, the same for the same seed";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Size of the backing disk."),
        Key::new("seed", Kind::Text, "seed=<SEED>  Random number generator seed."),
    ];
    type Connection = RandomDisk;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "size" => self.size = nbdbox_sdk::parse_size(key, value)?,
            _ => self.seed = Some(nbdkit_parse::parse_u32(key, value).map_err(|why| error(Errno::Einval, why))?),
        }
        Ok(())
    }

    fn get_ready(&mut self) -> Result<()> {
        self.seed.get_or_insert_with(|| once::value("seed", time_seed) as u32);
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<RandomDisk> {
        Ok(RandomDisk {
            size: self.size,
            seed: self.seed.unwrap_or_default(),
        })
    }
}

/// random.c's default seed: time(NULL), as an unsigned 32-bit number.
fn time_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::from(now.map_or(0, |d| d.as_secs()) as u32)
}

struct RandomDisk {
    size: u64,
    seed: u32,
}

#[nbdbox_sdk::connection]
impl Connection for RandomDisk {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_multi_conn: true,
            can_cache: CacheMode::Native,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        nbdbox_sdk::in_chunks(count, offset, |chunk, at, chunk_offset| {
            fill(chunk, self.seed, chunk_offset);
            dst.write(at, chunk);
            Ok(())
        })
    }

    /// random.c: a write must match what a read returns.
    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        nbdbox_sdk::in_chunks(count, offset, |expected, at, chunk_offset| {
            fill(expected, self.seed, chunk_offset);
            if src.read(at, expected.len() as u32) != *expected {
                return Err(error(Errno::Eio, "data written does not match expected"));
            }
            Ok(())
        })
    }

    fn trim(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Err(error(Errno::Eio, "attempt to trim or zero non-sparse random disk"))
    }

    fn zero(&self, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.trim(count, offset, flags)
    }
}

nbdbox_sdk::plugin!(Random);

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn bytes_depend_on_seed_plus_offset_only() {
        let mut a = [0; 64];
        let mut b = [0; 32];
        fill(&mut a, 5, 100);
        fill(&mut b, 6, 131);
        assert_eq!(a[32..], b, "seed 5 offset 132 is seed 6 offset 131");
        let mut c = [0; 64];
        fill(&mut c, 7, 100);
        assert_ne!(a, c);
    }
}
