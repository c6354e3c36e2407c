//! nbdkit's rules for one layer, as pure functions: what a layer's answers mean once the
//! connection's read-only flag and the host's emulation are applied, which block sizes are
//! valid, and how an extent list is checked and trimmed. No I/O, no components.

use crate::api::{BlockSize, Caps, Extent, Support};

/// The capabilities a context of this layer has (nbdkit's server/backend.c and
/// server/plugins.c): a read-only context has no write-class capability; a plugin cannot hide
/// zeroing (it becomes emulated, with a fast "no" for fast zeroes), only filters can.
pub fn effective_caps(raw: Caps, readonly: bool, is_plugin: bool) -> Caps {
    let can_write = raw.can_write && !readonly;
    if !can_write {
        return Caps {
            can_write,
            can_trim: false,
            can_zero: Support::None,
            can_fast_zero: false,
            can_fua: Support::None,
            ..raw
        };
    }
    let can_zero = match (is_plugin, raw.can_zero) {
        (true, Support::Native) => Support::Native,
        (true, _) => Support::Emulate,
        (false, zero) => zero,
    };
    let can_fast_zero = match can_zero {
        Support::None => false,
        // The host fails a fast zero at once when it would have to write zeroes.
        Support::Emulate if is_plugin => true,
        _ => raw.can_fast_zero,
    };
    Caps {
        can_write,
        can_zero,
        can_fast_zero,
        ..raw
    }
}

/// nbdkit's validation of a `.block_size` answer: all zero means "not advertised" (None).
pub fn check_block_size(b: BlockSize) -> Result<Option<BlockSize>, String> {
    if b.minimum == 0 && b.preferred == 0 && b.maximum == 0 {
        return Ok(None);
    }
    let ok = b.minimum.is_power_of_two()
        && b.minimum <= 65536
        && b.preferred.is_power_of_two()
        && (512..=32 << 20).contains(&b.preferred)
        && (b.maximum == u32::MAX || b.maximum.is_multiple_of(b.minimum))
        && b.minimum <= b.preferred
        && b.preferred <= b.maximum;
    if ok {
        Ok(Some(b))
    } else {
        Err(format!(
            "block size (minimum {}, preferred {}, maximum {}) is invalid",
            b.minimum, b.preferred, b.maximum
        ))
    }
}

/// The most extents one answer keeps (nbdkit stops accepting at 1 Mi).
pub const MAX_EXTENTS: usize = 1 << 20;

/// A layer's extent list as nbdkit's nbdkit_add_extent accepts it for a request at
/// `offset` on a layer of `size` bytes: zero-length extents and extents wholly before
/// `offset` are dropped, the first kept one is trimmed to start at `offset` (it must not
/// start after it), extents past `size` are clipped, adjacent extents of the same type are
/// merged, and the list must be ascending and contiguous. At least one extent must remain.
pub fn normalize_extents(offset: u64, size: u64, extents: &[Extent]) -> Result<Vec<Extent>, &'static str> {
    let mut out: Vec<Extent> = Vec::new();
    let mut expected_start = None;
    for e in extents {
        if expected_start.is_some_and(|expected| expected != e.offset) {
            return Err("extents must be ascending and contiguous");
        }
        let end = e.offset.checked_add(e.length).ok_or("an extent ends beyond 2^64")?;
        expected_start = Some(end);
        // Like nbdkit, a full list ignores the rest but still checks contiguity.
        if e.length == 0 || e.offset >= size || out.len() >= MAX_EXTENTS {
            continue;
        }
        let end = end.min(size);
        let start = if out.is_empty() {
            if end <= offset {
                continue;
            }
            if e.offset > offset {
                return Err("the first extent starts after the requested offset");
            }
            offset
        } else {
            e.offset
        };
        match out.last_mut() {
            Some(last) if last.hole == e.hole && last.zero == e.zero => last.length += end - start,
            _ => out.push(Extent {
                offset: start,
                length: end - start,
                ..*e
            }),
        }
    }
    if out.is_empty() {
        return Err("a layer must return at least one extent covering the requested offset");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(write: bool, zero: Support, fast_zero: bool, fua: Support) -> Caps {
        Caps {
            can_write: write,
            can_trim: write,
            can_zero: zero,
            can_fast_zero: fast_zero,
            can_fua: fua,
            ..Caps::NONE
        }
    }

    #[test]
    #[rustfmt::skip] // One row per rule reads best as a table.
    fn effective_caps_rules() {
        use Support::*;
        // (raw, readonly, plugin) -> (write, zero, fast zero, fua)
        let rows = [
            (caps(true, Native, false, Native), false, true, (true, Native, false, Native)),
            (caps(true, None, false, Emulate), false, true, (true, Emulate, true, Emulate)),
            (caps(true, Emulate, false, None), false, true, (true, Emulate, true, None)),
            (caps(true, Native, true, Native), true, true, (false, None, false, None)),
            (caps(false, Native, true, Native), false, true, (false, None, false, None)),
            (caps(true, None, true, Native), false, false, (true, None, false, Native)),
            (caps(true, Emulate, false, Native), false, false, (true, Emulate, false, Native)),
        ];
        for (raw, readonly, plugin, (write, zero, fast, fua)) in rows {
            let c = effective_caps(raw, readonly, plugin);
            assert_eq!((c.can_write, c.can_zero, c.can_fast_zero, c.can_fua), (write, zero, fast, fua), "{raw:?} ro={readonly} plugin={plugin}");
            assert_eq!(c.can_trim, write, "trim follows write");
        }
    }

    #[test]
    fn block_sizes() {
        let b = |minimum, preferred, maximum| BlockSize {
            minimum,
            preferred,
            maximum,
        };
        assert_eq!(check_block_size(b(0, 0, 0)), Ok(None));
        assert_eq!(
            check_block_size(b(512, 4096, u32::MAX)),
            Ok(Some(b(512, 4096, u32::MAX)))
        );
        assert_eq!(check_block_size(b(1, 512, 1 << 20)), Ok(Some(b(1, 512, 1 << 20))));
        for bad in [
            b(3, 4096, 8192),
            b(1 << 17, 1 << 17, 1 << 17),
            b(512, 256, 4096),
            b(512, 64 << 20, u32::MAX),
            b(4096, 512, 8192),
            b(512, 4096, 1000),
        ] {
            assert!(check_block_size(bad).is_err(), "{bad:?}");
        }
    }

    fn e(offset: u64, length: u64, hole: bool) -> Extent {
        Extent {
            offset,
            length,
            hole,
            zero: hole,
        }
    }

    #[test]
    fn extents_are_trimmed_and_merged() {
        let list = [
            e(0, 100, true),
            e(100, 100, true),
            e(200, 300, false),
            e(500, 1000, true),
        ];
        assert_eq!(
            normalize_extents(50, 1000, &list),
            Ok(vec![e(50, 150, true), e(200, 300, false), e(500, 500, true)])
        );
        // Wholly before the offset, and zero-length extents, are dropped.
        let list = [e(0, 10, false), e(10, 0, true), e(10, 90, true)];
        assert_eq!(normalize_extents(20, 100, &list), Ok(vec![e(20, 80, true)]));
    }

    #[test]
    fn bad_extent_lists() {
        assert!(normalize_extents(0, 100, &[]).is_err());
        assert!(normalize_extents(10, 100, &[e(20, 10, false)]).is_err());
        assert!(normalize_extents(0, 100, &[e(0, 10, false), e(20, 10, false)]).is_err());
        assert!(normalize_extents(0, 100, &[e(0, 10, false), e(5, 10, false)]).is_err());
        assert!(normalize_extents(0, 100, &[e(u64::MAX - 1, 10, false)]).is_err());
        assert!(normalize_extents(50, 100, &[e(0, 50, false)]).is_err());
    }
}
