//! truncate: change the size the layer below has (nbdkit's filters/truncate/truncate.c):
//! `truncate=SIZE` sets it, `round-up=N` and `round-down=N` (powers of 2) round it, applied
//! in that order. Past the real end reads are zeroes, writes must be zeroes (else ENOSPC),
//! trims and zeroes do nothing, extents are a hole.
//!
//! State: per connection (the sizes, taken at prepare as nbdkit does).

use nbdbox_filter_sdk::parse_size;
use nbdbox_filter_sdk::prelude::*;
use std::cell::Cell;

#[derive(Default, Clone, Copy)]
struct Truncate {
    size: Option<u64>,
    round_up: Option<u64>,
    round_down: Option<u64>,
}

fn parse_round(key: &str, value: &str) -> Result<u64> {
    match parse_size(key, value)? {
        0 => Err(error(Errno::Einval, format!("if set, the {key} parameter must be > 0"))),
        n if n > u64::from(u32::MAX) => Err(error(Errno::Einval, format!("the {key} parameter is too large"))),
        n if !n.is_power_of_two() => Err(error(
            Errno::Einval,
            format!("the {key} parameter must be a power of 2"),
        )),
        n => Ok(n),
    }
}

impl Truncate {
    /// The size served for a layer below of `real` bytes.
    fn apply(&self, real: u64) -> Result<u64> {
        let mut size = self.size.unwrap_or(real);
        if let Some(n) = self.round_up {
            size = size
                .checked_next_multiple_of(n)
                .filter(|&s| s <= i64::MAX as u64)
                .ok_or_else(|| {
                    error(
                        Errno::Einval,
                        format!("cannot round size {size} up to next boundary of {n}"),
                    )
                })?;
        }
        if let Some(n) = self.round_down {
            size -= size % n;
        }
        Ok(size)
    }
}

impl Filter for Truncate {
    const NAME: &'static str = "truncate";
    const DESCRIPTION: &'static str = "nbdkit truncate filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("truncate", Kind::Size, "The new size"),
        Key::new("round-up", Kind::Size, "Round up to next multiple of N"),
        Key::new("round-down", Kind::Size, "Round down to multiple of N"),
    ];
    type Connection = TruncateConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "truncate" => self.size = Some(parse_size(key, value)?),
            "round-up" => self.round_up = Some(parse_round(key, value)?),
            _ => self.round_down = Some(parse_round(key, value)?),
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<TruncateConnection> {
        Ok(TruncateConnection {
            settings: *self,
            real_size: Cell::new(0),
            size: Cell::new(0),
        })
    }
}

struct TruncateConnection {
    settings: Truncate,
    real_size: Cell<u64>,
    size: Cell<u64>,
}

impl TruncateConnection {
    /// How much of `[offset, offset + count)` is inside the layer below.
    fn below(&self, count: u64, offset: u64) -> u64 {
        self.real_size.get().saturating_sub(offset).min(count)
    }
}

impl FilterConnection for TruncateConnection {
    fn prepare(&self, next: &Next) -> Result<()> {
        let real = next.get_size()?;
        self.real_size.set(real);
        self.size.set(self.settings.apply(real)?);
        Ok(())
    }

    fn get_size(&self, _next: &Next) -> Result<u64> {
        Ok(self.size.get())
    }

    /// Extents are always answered (the tail is a hole); fast zero too (zeroing the tail is
    /// fast), as nbdkit's truncate_can_extents and truncate_can_fast_zero.
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        Ok(Capabilities {
            can_extents: true,
            can_fast_zero: true,
            ..next.capabilities()?
        })
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let n = self.below(u64::from(count), offset) as u32;
        if n == count {
            return next.pread(dst, count, offset, flags);
        }
        if n > 0 {
            filter_blocks::read_below_into(next, dst, 0, n, offset)?;
        }
        dst.zero(n, count - n);
        Ok(())
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let n = self.below(u64::from(count), offset) as u32;
        if n == count {
            return next.pwrite(src, count, offset, flags);
        }
        if src.read(n, count - n).iter().any(|&b| b != 0) {
            return Err(error(Errno::Enospc, "truncate: write beyond end of underlying device"));
        }
        if n > 0 {
            filter_blocks::write_below(next, src.read(0, n), offset, flags)?;
        }
        Ok(())
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        match self.below(count, offset) {
            0 => Ok(()),
            n => next.trim(n, offset, flags),
        }
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        match self.below(count, offset) {
            0 => Ok(()),
            _ if flags.contains(CmdFlags::FAST_ZERO) && !next.capabilities()?.can_fast_zero => {
                Err(errno(Errno::Enotsup))
            }
            n => next.zero(n, offset, flags),
        }
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        match self.below(count, offset) {
            0 => Ok(()),
            n => next.cache(n, offset, flags),
        }
    }

    /// The layer below's extents up to its end; past it, one hole to the end.
    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let real = self.real_size.get();
        if offset >= real {
            return Ok(vec![Extent {
                offset: real,
                length: self.size.get() - real,
                flags: ExtentFlags::HOLE | ExtentFlags::ZERO,
            }]);
        }
        let mut list = filter_blocks::ExtentList::new();
        list.push_below(
            &next.extents(self.below(count, offset), offset, flags)?,
            offset,
            real,
            0,
        );
        Ok(list.into_vec())
    }
}

nbdbox_filter_sdk::filter!(Truncate);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_then_round() {
        let t = |size, up, down| Truncate {
            size,
            round_up: up,
            round_down: down,
        };
        assert_eq!(t(None, None, None).apply(1000).unwrap(), 1000);
        assert_eq!(t(Some(5000), None, None).apply(1000).unwrap(), 5000);
        assert_eq!(t(None, Some(512), None).apply(1000).unwrap(), 1024);
        assert_eq!(t(None, None, Some(512)).apply(1000).unwrap(), 512);
        assert_eq!(t(Some(1), Some(4096), None).apply(1000).unwrap(), 4096);
        assert!(t(Some(i64::MAX as u64), Some(4096), None).apply(0).is_err());
    }
}
