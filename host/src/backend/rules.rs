//! nbdkit's rules for one layer, as pure functions: what a layer's answers mean once the
//! connection's read-only flag and the host's emulation are applied, which block sizes are
//! valid, and how an extent list is checked and trimmed. No I/O, no components.

use crate::api::{BlockSize, Caps, ExportEntry, Extent, Support};
use crate::protocol::consts::MAX_STRING;

/// nbdkit's MAX_EXPORTS (server/exports.c): the most exports one listing may hold.
pub const MAX_EXPORTS: usize = 10_000;

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

/// Why `name` cannot be an export name on the wire, if it cannot: NBD strings are at most
/// NBD_MAX_STRING bytes (nbdkit's nbdkit_add_export), and a name with NUL cannot be asked for.
pub fn export_name_fault(name: &str) -> Option<&'static str> {
    if name.len() > MAX_STRING {
        Some("longer than 4096 bytes")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else {
        None
    }
}

/// A description held to NBD_MAX_STRING bytes (cut at a character boundary), without NULs.
pub fn bounded_description(description: String) -> String {
    if description.len() <= MAX_STRING && !description.contains('\0') {
        return description;
    }
    let mut kept = String::with_capacity(MAX_STRING);
    for c in description.chars().filter(|&c| c != '\0') {
        if kept.len() + c.len_utf8() > MAX_STRING {
            break;
        }
        kept.push(c);
    }
    kept
}

/// A layer's listing held to what the wire carries: entries whose name cannot be sent are
/// left out, descriptions are cut, and at most [`MAX_EXPORTS`] are kept (nbdkit fails the
/// whole listing instead). The second value says what was left out, for the log.
pub fn bounded_exports(exports: Vec<ExportEntry>) -> (Vec<ExportEntry>, Option<String>) {
    let listed = exports.len();
    let mut faults = Vec::new();
    let mut kept: Vec<ExportEntry> = exports
        .into_iter()
        .filter(|e| match export_name_fault(&e.name) {
            Some(fault) => {
                if faults.len() < 3 {
                    faults.push(fault);
                }
                false
            }
            None => true,
        })
        .map(|e| ExportEntry {
            description: e.description.map(bounded_description),
            ..e
        })
        .collect();
    let invalid = listed - kept.len();
    let over = kept.len().saturating_sub(MAX_EXPORTS);
    kept.truncate(MAX_EXPORTS);
    let mut notes = Vec::new();
    if invalid > 0 {
        notes.push(format!(
            "{invalid} with a name that cannot be sent ({})",
            faults.join(", ")
        ));
    }
    if over > 0 {
        notes.push(format!("{over} beyond the first {MAX_EXPORTS}"));
    }
    let note = (!notes.is_empty()).then(|| format!("{listed} exports listed; left out {}", notes.join(" and ")));
    (kept, note)
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

    fn entry(name: &str, description: Option<&str>) -> ExportEntry {
        ExportEntry {
            name: name.to_owned(),
            description: description.map(str::to_owned),
        }
    }

    #[test]
    fn listings_are_held_to_the_wire_limits() {
        let long = "n".repeat(MAX_STRING + 1);
        let listing = vec![
            entry("a", Some("fine")),
            entry(&long, None),
            entry("b\0c", None),
            entry("d", Some(&"é".repeat(3000))),
        ];
        let (kept, note) = bounded_exports(listing);
        let names: Vec<&str> = kept.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        let cut = kept[1].description.as_deref().unwrap();
        assert_eq!(cut.len(), MAX_STRING);
        assert!(cut.chars().all(|c| c == 'é'));
        let note = note.unwrap();
        assert!(note.contains("2 with a name"), "{note}");
        assert!(note.contains("longer than 4096") && note.contains("NUL"), "{note}");

        let many: Vec<ExportEntry> = (0..MAX_EXPORTS + 5).map(|i| entry(&i.to_string(), None)).collect();
        let (kept, note) = bounded_exports(many);
        assert_eq!(kept.len(), MAX_EXPORTS);
        assert!(note.unwrap().contains("5 beyond"));
        assert_eq!(bounded_exports(vec![entry("x", None)]).1, None);
    }

    #[test]
    fn descriptions_lose_nuls() {
        assert_eq!(bounded_description("a\0b".into()), "ab");
        assert_eq!(bounded_description("plain".into()), "plain");
    }
}
