//! The `protect=` ranges: parsing `START-END` (inclusive, decimal, 0octal or 0xhex, either
//! end omitted) and `~START-END` (the complement), and merging them into a sorted list of
//! disjoint half-open ranges. Plain Rust, unit-tested natively.

/// `[start, end)` ranges, sorted, disjoint and not touching.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

/// The top of nbdkit's address space (its regions end at INT64_MAX).
const TOP: u64 = i64::MAX as u64 + 1;

fn number(s: &str) -> Result<u64, String> {
    let parsed = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8)
    } else {
        s.parse()
    };
    parsed.map_err(|_| format!("could not parse number: {s}"))
}

/// One `protect=` value as the half-open ranges it protects.
pub fn parse(value: &str) -> Result<Vec<(u64, u64)>, String> {
    let (complement, range) = match value.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| format!("protect: range must be START-END: {value}"))?;
    let start = if start.is_empty() { 0 } else { number(start)? };
    let end = if end.is_empty() {
        TOP
    } else {
        number(end)?.saturating_add(1).min(TOP)
    };
    if start >= end {
        return Err(format!("protect: range is empty or backwards: {value}"));
    }
    Ok(if complement {
        [(0, start), (end, TOP)].into_iter().filter(|(s, e)| s < e).collect()
    } else {
        vec![(start, end)]
    })
}

impl Ranges {
    pub fn add(&mut self, ranges: Vec<(u64, u64)>) {
        self.0.extend(ranges);
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.0 = merged;
    }

    /// The protected parts of `[offset, offset + count)`.
    pub fn within(&self, offset: u64, count: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let end = offset + count;
        self.0
            .iter()
            .map(move |&(s, e)| (s.max(offset), e.min(end)))
            .filter(|(s, e)| s < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("0-0x1bd"), Ok(vec![(0, 0x1be)]));
        assert_eq!(parse("010-"), Ok(vec![(8, TOP)]));
        assert_eq!(parse("-99"), Ok(vec![(0, 100)]));
        assert_eq!(parse("~512-1023"), Ok(vec![(0, 512), (1024, TOP)]));
        assert!(parse("10-5").is_err());
        assert!(parse("x").is_err());
    }

    #[test]
    fn merged_and_clipped() {
        let mut r = Ranges::default();
        r.add(vec![(10, 20)]);
        r.add(vec![(15, 30), (40, 50)]);
        r.add(vec![(30, 35)]);
        assert_eq!(r, Ranges(vec![(10, 35), (40, 50)]));
        assert_eq!(r.within(0, 45).collect::<Vec<_>>(), [(10, 35), (40, 45)]);
        assert_eq!(r.within(35, 5).count(), 0);
    }
}
