//! blocksize-policy: advertise block size constraints and enforce them (nbdkit's
//! filters/blocksize-policy/policy.c). `blocksize-minimum/preferred/maximum=N` replace what
//! the layer below advertises (the others default to 1, 4096 and 0xffffffff when it
//! advertises nothing); with none of them set the layer below's answer passes unchanged.
//! `blocksize-error-policy=error` fails requests that break the constraints with EINVAL
//! before the layer below sees them (default `allow` passes them on).
//! `blocksize-write-disconnect=N` (nbdkit ≥ 1.34): a write larger than N fails with
//! ESHUTDOWN; nbdkit drops the connection, which a component cannot ask the host to do.
//!
//! State: per connection (the constraints in force, from the layer below's at prepare).

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{log_error, parse_size};
use std::cell::Cell;

#[derive(Default, Clone, Copy)]
struct Policy {
    minimum: Option<u32>,
    preferred: Option<u32>,
    maximum: Option<u32>,
    error: bool,
    write_disconnect: Option<u64>,
}

impl Policy {
    /// The constraints for a layer below that advertises `below`.
    fn constraints(&self, below: Option<BlockSize>) -> Option<BlockSize> {
        if self.minimum.is_none() && self.preferred.is_none() && self.maximum.is_none() {
            return below;
        }
        let below = below.unwrap_or(BlockSize {
            minimum: 1,
            preferred: 4096,
            maximum: u32::MAX,
        });
        Some(BlockSize {
            minimum: self.minimum.unwrap_or(below.minimum),
            preferred: self.preferred.unwrap_or(below.preferred),
            maximum: self.maximum.unwrap_or(below.maximum),
        })
    }
}

fn parse_u32(key: &str, value: &str) -> Result<u32> {
    u32::try_from(parse_size(key, value)?).map_err(|_| error(Errno::Einval, format!("{key}: value is too large")))
}

impl Filter for Policy {
    const NAME: &'static str = "blocksize-policy";
    const DESCRIPTION: &'static str = "set minimum, preferred and maximum block size, and apply error policy";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "blocksize-error-policy",
            Kind::Text,
            "Set error policy ('allow' or 'error')",
        ),
        Key::new("blocksize-minimum", Kind::Size, "Set minimum block size"),
        Key::new("blocksize-preferred", Kind::Size, "Set preferred block size"),
        Key::new("blocksize-maximum", Kind::Size, "Set maximum block size"),
        Key::new(
            "blocksize-write-disconnect",
            Kind::Size,
            "Fail writes larger than this with ESHUTDOWN",
        ),
    ];
    type Connection = PolicyConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "blocksize-error-policy" => {
                self.error = match value {
                    "allow" => false,
                    "error" => true,
                    _ => return Err(error(Errno::Einval, format!("unknown {key}: {value}"))),
                }
            }
            "blocksize-minimum" => self.minimum = Some(parse_u32(key, value)?),
            "blocksize-preferred" => self.preferred = Some(parse_u32(key, value)?),
            "blocksize-maximum" => self.maximum = Some(parse_u32(key, value)?),
            _ => self.write_disconnect = Some(parse_size(key, value)?),
        }
        Ok(())
    }

    /// nbdkit's checks of the configured sizes.
    fn config_complete(&mut self) -> Result<()> {
        let bad = |why: &str| Err(error(Errno::Einval, why.to_string()));
        if let Some(min) = self.minimum {
            if !min.is_power_of_two() || min > 65536 {
                return bad("blocksize-minimum must be a power of 2, between 1 and 64K");
            }
        }
        if let Some(pref) = self.preferred {
            if !pref.is_power_of_two() || !(512..=32 << 20).contains(&pref) {
                return bad("blocksize-preferred must be a power of 2, between 512 and 32M");
            }
        }
        if let (Some(min), Some(max)) = (self.minimum, self.maximum) {
            if max != u32::MAX && !max.is_multiple_of(min) {
                return bad("blocksize-maximum must be -1 or a multiple of blocksize-minimum");
            }
        }
        if let (Some(min), Some(pref)) = (self.minimum, self.preferred) {
            if min > pref {
                return bad("blocksize-minimum must be <= blocksize-preferred");
            }
        }
        if let (Some(pref), Some(max)) = (self.preferred, self.maximum) {
            if pref > max {
                return bad("blocksize-preferred must be <= blocksize-maximum");
            }
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<PolicyConnection> {
        Ok(PolicyConnection {
            policy: *self,
            constraints: Cell::new(None),
        })
    }
}

struct PolicyConnection {
    policy: Policy,
    constraints: Cell<Option<BlockSize>>,
}

impl PolicyConnection {
    /// nbdkit's check_policy: EINVAL for a request the constraints forbid, under the error
    /// policy. `data`: the maximum applies (reads and writes).
    fn check(&self, what: &str, data: bool, count: u64, offset: u64) -> Result<()> {
        let Some(BlockSize { minimum, maximum, .. }) = self.constraints.get().filter(|_| self.policy.error) else {
            return Ok(());
        };
        let (minimum, maximum) = (u64::from(minimum), u64::from(maximum));
        let why = if count < minimum {
            format!("count {count} is smaller than minimum size {minimum}")
        } else if data && count > maximum {
            format!("count {count} is larger than maximum size {maximum}")
        } else if !count.is_multiple_of(minimum) {
            format!("count {count} is not a multiple of minimum size {minimum}")
        } else if !offset.is_multiple_of(minimum) {
            format!("offset {offset} is not aligned to a multiple of minimum size {minimum}")
        } else {
            return Ok(());
        };
        log_error(&format!("client {what} request rejected: {why}"));
        Err(error(Errno::Einval, why))
    }
}

impl FilterConnection for PolicyConnection {
    fn prepare(&self, next: &Next) -> Result<()> {
        self.constraints.set(self.policy.constraints(next.block_size()?));
        Ok(())
    }

    fn block_size(&self, _next: &Next) -> Result<Option<BlockSize>> {
        Ok(self.constraints.get())
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check("pread", true, u64::from(count), offset)?;
        next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        if self
            .policy
            .write_disconnect
            .is_some_and(|limit| u64::from(count) > limit)
        {
            log_error(&format!(
                "client write of {count} bytes is over blocksize-write-disconnect"
            ));
            return Err(errno(Errno::Eshutdown));
        }
        self.check("pwrite", true, u64::from(count), offset)?;
        next.pwrite(src, count, offset, flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check("trim", false, count, offset)?;
        next.trim(count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check("zero", false, count, offset)?;
        next.zero(count, offset, flags)
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.check("cache", false, count, offset)?;
        next.cache(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Policy);
