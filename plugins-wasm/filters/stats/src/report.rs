//! The statistics file nbdkit's stats filter writes at exit (filters/stats/stats.cpp of
//! nbdkit 1.32): a total line, then per kind of request its count, time, bytes and rates and,
//! unless the threshold is 0, how its requests spread over sizes and offset alignments.
//! Plain Rust, unit-tested natively against output of nbdkit 1.32.5.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Requests of one size class (sizes with the same number of bits, 2^bits..2^(bits+1)-1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SizeClass {
    /// Requests by the alignment of their offset in bits (trailing zero bits; -1 for offset 0,
    /// which is aligned to anything).
    pub by_alignment: BTreeMap<i32, u64>,
    /// Their bytes.
    pub bytes: u64,
}

/// The totals of one kind of request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stat {
    pub ops: u64,
    pub bytes: u64,
    /// Time spent in the layers below, in microseconds.
    pub usecs: u64,
    /// By the number of bits of the request size: floor(log2(size)).
    pub classes: BTreeMap<u32, SizeClass>,
}

/// The kinds of request, in the file's order.
pub const KINDS: [&str; 7] = ["read", "write", "trim", "zero", "extents", "cache", "flush"];

/// A request of `size` bytes at `offset`: its size class and alignment.
pub fn classify(size: u64, offset: u64) -> (u32, i32) {
    let bits = 63 - size.leading_zeros();
    let alignment = if offset == 0 {
        -1
    } else {
        offset.trailing_zeros() as i32
    };
    (bits, alignment)
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

fn humansize(bytes: u64) -> String {
    if bytes < KIB {
        format!("{bytes} bytes")
    } else if bytes < MIB {
        format!("{:.2} KiB", bytes as f64 / KIB as f64)
    } else if bytes < GIB {
        format!("{:.2} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.2} GiB", bytes as f64 / GIB as f64)
    }
}

/// Bytes per second, or "(n/a)" for no time at all.
fn humanrate(bytes: u64, usecs: u64) -> String {
    let secs = usecs as f64 / 1_000_000.0;
    if secs != 0.0 {
        humansize((bytes as f64 / secs) as u64)
    } else {
        "(n/a)".into()
    }
}

/// One class's alignments: cumulative counts (aligned to at least N bits), printed where they
/// change, stopping at the first that falls under the threshold's cut-off.
fn alignments(out: &mut String, class: &SizeClass, threshold: f64) {
    let any = class.by_alignment.get(&-1).copied().unwrap_or(0);
    let total: u64 = class.by_alignment.values().sum();
    let exact: Vec<(i32, u64)> = class
        .by_alignment
        .iter()
        .filter(|(&b, _)| b >= 0)
        .map(|(&b, &n)| (b, n))
        .collect();
    let cumulative: Vec<(i32, u64)> = exact
        .iter()
        .enumerate()
        .map(|(i, &(bits, _))| (bits, any + exact[i..].iter().map(|&(_, n)| n).sum::<u64>()))
        .collect();
    let cutoff = ((1.0 - threshold) * total as f64) as u64;
    for (i, &(bits, requests)) in cumulative.iter().enumerate() {
        if requests < cutoff {
            let share = requests as f64 / total as f64 * 100.0;
            let _ = writeln!(out, "         {bits:2}+ bit-aligned: {share:4.1}% ({requests})");
            break;
        }
        if cumulative.get(i + 1).is_none_or(|&(_, next)| next != requests) {
            let share = (requests * 100) as f64 / total as f64;
            let _ = writeln!(out, "         {bits:2} bit aligned: {share:5.1}% ({requests})");
        }
    }
}

/// The size classes, most requests first, until `threshold` of the requests are shown.
fn histogram(out: &mut String, stat: &Stat, threshold: f64) {
    let total = stat
        .classes
        .values()
        .map(|c| c.by_alignment.values().sum::<u64>())
        .sum::<u64>() as f64;
    // stats.cpp keys this map by the number of requests, so of two classes with as many
    // requests it keeps one; which one depends on its hash table's order, here the larger.
    let mut by_requests: BTreeMap<u64, u32> = BTreeMap::new();
    for (&bits, class) in &stat.classes {
        by_requests.insert(class.by_alignment.values().sum(), bits);
    }
    let to_print = (threshold * total) as u64;
    let mut printed = 0;
    for (&requests, &bits) in by_requests.iter().rev() {
        if printed >= to_print {
            // stats.cpp never subtracts the sizes it printed: the bytes are all of them.
            let rest = stat.ops - printed;
            let share = rest as f64 / total * 100.0;
            let _ = writeln!(
                out,
                "    other sizes: {share:4.1}% ({rest} reqs, {} total)",
                humansize(stat.bytes)
            );
            break;
        }
        let class = &stat.classes[&bits];
        let share = requests as f64 / total * 100.0;
        let _ = writeln!(
            out,
            "    {bits:2} bits: {share:4.1}% ({requests} reqs, {} total)",
            humansize(class.bytes)
        );
        printed += requests;
        alignments(out, class, threshold);
    }
}

/// The whole file for `stats` (in [`KINDS`] order) after `usecs` of serving.
pub fn report(stats: &[Stat; 7], usecs: u64, threshold: f64) -> String {
    let mut out = String::new();
    let counted = [0, 1, 2, 3, 4, 6];
    let ops: u64 = counted.iter().map(|&i| stats[i].ops).sum();
    let bytes: u64 = stats[..4].iter().map(|s| s.bytes).sum();
    let _ = writeln!(
        out,
        "total: {ops} ops, {:.6} s, {}, {}/s",
        usecs as f64 / 1_000_000.0,
        humansize(bytes),
        humanrate(bytes, usecs)
    );
    for (name, stat) in KINDS.iter().zip(stats) {
        if stat.ops == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "{name}: {} ops, {:.6} s, {}, {}/s op, {}/s total",
            stat.ops,
            stat.usecs as f64 / 1_000_000.0,
            humansize(stat.bytes),
            humanrate(stat.bytes, stat.usecs),
            humanrate(stat.bytes, usecs)
        );
        if threshold != 0.0 && !stat.classes.is_empty() {
            out.push_str("  Request size and alignment breakdown:\n");
            histogram(&mut out, stat, threshold);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(requests: &[(u64, u64)], usecs: u64) -> Stat {
        let mut s = Stat {
            usecs,
            ..Stat::default()
        };
        for &(size, offset) in requests {
            s.ops += 1;
            s.bytes += size;
            let (bits, alignment) = classify(size, offset);
            let class = s.classes.entry(bits).or_default();
            *class.by_alignment.entry(alignment).or_default() += 1;
            class.bytes += size;
        }
        s
    }

    /// Requests nbdkit 1.32.5's stats filter was run with, and the file it wrote (times and
    /// rates set to what the numbers give).
    #[test]
    fn matches_nbdkit_1_32_5() {
        let reads: Vec<(u64, u64)> = (0..10).map(|i| (4096, i * 4096)).collect();
        let mut writes: Vec<(u64, u64)> = (0..5).map(|i| (512, i * 512 + 512)).collect();
        writes.push((1000, 3));
        let stats = [
            stat(&reads, 6),
            stat(&writes, 31),
            stat(&[(4096, 8192)], 0),
            stat(&[(65536, 0)], 1),
            Stat::default(),
            stat(&[(512, 0)], 0),
            Stat {
                ops: 1,
                ..Stat::default()
            },
        ];
        let expected = "total: 19 ops, 0.032160 s, 111.48 KiB, 3.39 MiB/s
read: 10 ops, 0.000006 s, 40.00 KiB, 6.36 GiB/s op, 1.21 MiB/s total
  Request size and alignment breakdown:
    12 bits: 100.0% (10 reqs, 40.00 KiB total)
         12 bit aligned: 100.0% (10)
         13 bit aligned:  50.0% (5)
         14 bit aligned:  30.0% (3)
         15 bit aligned:  20.0% (2)

write: 6 ops, 0.000031 s, 3.48 KiB, 109.52 MiB/s op, 108.10 KiB/s total
  Request size and alignment breakdown:
     9 bits: 100.0% (6 reqs, 3.48 KiB total)
          0 bit aligned: 100.0% (6)
          9 bit aligned:  83.3% (5)
         10 bit aligned:  33.3% (2)
         11 bit aligned:  16.7% (1)

trim: 1 ops, 0.000000 s, 4.00 KiB, (n/a)/s op, 124.38 KiB/s total
  Request size and alignment breakdown:
    other sizes: 100.0% (1 reqs, 4.00 KiB total)

zero: 1 ops, 0.000001 s, 64.00 KiB, 61.04 GiB/s op, 1.94 MiB/s total
  Request size and alignment breakdown:
    other sizes: 100.0% (1 reqs, 64.00 KiB total)

cache: 1 ops, 0.000000 s, 512 bytes, (n/a)/s op, 15.55 KiB/s total
  Request size and alignment breakdown:
    other sizes: 100.0% (1 reqs, 512 bytes total)

flush: 1 ops, 0.000000 s, 0 bytes, (n/a)/s op, 0 bytes/s total
";
        assert_eq!(report(&stats, 32160, 0.95), expected);
    }

    #[test]
    fn a_threshold_cuts_the_alignments_short() {
        // 20 requests of 4 KiB, one at offset 2^20 and the others 4 KiB-aligned only.
        let mut requests: Vec<(u64, u64)> = (1..20).map(|i| (4096, (2 * i + 1) * 4096)).collect();
        requests.push((4096, 1 << 20));
        let mut out = String::new();
        alignments(&mut out, &stat(&requests, 1).classes[&12], 0.5);
        assert_eq!(
            out,
            "         12 bit aligned: 100.0% (20)\n         20+ bit-aligned:  5.0% (1)\n"
        );
    }

    #[test]
    fn no_histogram_at_threshold_zero() {
        let stats = [
            stat(&[(512, 0)], 1),
            Stat::default(),
            Stat::default(),
            Stat::default(),
            Stat::default(),
            Stat::default(),
            Stat::default(),
        ];
        assert!(!report(&stats, 10, 0.0).contains("breakdown"));
    }
}
