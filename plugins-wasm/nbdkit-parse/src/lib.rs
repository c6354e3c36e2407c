//! Numbers as nbdkit reads them, so that a command line means the same to nbdbox as to
//! nbdkit: the `nbdkit_parse_*` family (server/public.c) for whole parameter values, and C's
//! `strtol`/`sscanf("%i")` for numbers inside a longer string (the data plugin's language).
//! Plain Rust without WIT types: errors are messages the caller turns into its own errors.

/// What `strtoimax`/`strtoumax` with base 0 make of the start of `s`: skip white space, an
/// optional sign, then `0x` hexadecimal, `0` octal or decimal digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// True for a leading `-`.
    pub negative: bool,
    /// The magnitude, or None when it overflows 64 bits (C's ERANGE).
    pub magnitude: Option<u64>,
    /// Bytes of `s` used, white space and sign included; 0 when no digit was found.
    pub len: usize,
}

/// C's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// The number at the start of `s`, as strtol with base 0 finds it.
pub fn scan(s: &str) -> Scanned {
    scan_base(s, 0)
}

/// The decimal number at the start of `s`, as strtoul with base 10 (sscanf's `%u`) finds it.
pub fn scan_decimal(s: &str) -> Scanned {
    scan_base(s, 10)
}

/// strtol's scan with `base` 0 (prefixes choose) or 10.
fn scan_base(s: &str, base: u32) -> Scanned {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let negative = b.get(i) == Some(&b'-');
    if matches!(b.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let (radix, start) = if base == 10 {
        (10, i)
    } else if b.get(i) == Some(&b'0') && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        if b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) {
            (16, i + 2)
        } else {
            // "0x" with no hex digit after it: just the 0 (the x is not part of the number).
            return Scanned {
                negative,
                magnitude: Some(0),
                len: i + 1,
            };
        }
    } else if b.get(i) == Some(&b'0') {
        (8, i)
    } else {
        (10, i)
    };
    let mut end = start;
    let mut magnitude = Some(0u64);
    while let Some(digit) = b.get(end).and_then(|&c| (c as char).to_digit(radix)) {
        magnitude = magnitude
            .and_then(|m| m.checked_mul(u64::from(radix)))
            .and_then(|m| m.checked_add(u64::from(digit)));
        end += 1;
    }
    if end == start {
        return Scanned {
            negative: false,
            magnitude: Some(0),
            len: 0,
        };
    }
    Scanned {
        negative,
        magnitude,
        len: end,
    }
}

impl Scanned {
    /// strtoll's value: saturated at the ends of i64 on overflow.
    pub fn saturating_i64(&self) -> i64 {
        match (self.magnitude, self.negative) {
            (Some(m), false) => i64::try_from(m).unwrap_or(i64::MAX),
            (Some(m), true) if m <= 1 << 63 => (m as i64).wrapping_neg(),
            (_, false) => i64::MAX,
            (_, true) => i64::MIN,
        }
    }
}

/// Parse a whole value with strtoimax/strtoumax's syntax, as nbdkit's parse_signed and
/// parse_unsigned do: the number, no trailing garbage, and (for an unsigned target) no `-`.
fn parse_whole(what: &str, value: &str, unsigned: bool) -> Result<(bool, u64), String> {
    if unsigned
        && value
            .trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8))
            .starts_with('-')
    {
        return Err(format!("{what}: negative numbers are not allowed"));
    }
    let scanned = scan(value);
    if scanned.len == 0 {
        return Err(format!("{what}: empty string where we expected a number"));
    }
    if scanned.len != value.len() {
        return Err(format!("{what}: could not parse number: \"{value}\": trailing garbage"));
    }
    match scanned.magnitude {
        Some(m) => Ok((scanned.negative, m)),
        None => Err(format!(
            "{what}: could not parse number: \"{value}\": Numerical result out of range"
        )),
    }
}

fn out_of_range(what: &str, value: &str) -> String {
    format!("{what}: could not parse number: \"{value}\": Numerical result out of range")
}

/// nbdkit_parse_uint64_t (and, narrowed, the smaller unsigned ones).
pub fn parse_u64(what: &str, value: &str) -> Result<u64, String> {
    // parse_whole refused a '-' already; "+N" is N.
    let (_, magnitude) = parse_whole(what, value, true)?;
    Ok(magnitude)
}

/// nbdkit_parse_uint32_t.
pub fn parse_u32(what: &str, value: &str) -> Result<u32, String> {
    u32::try_from(parse_u64(what, value)?).map_err(|_| out_of_range(what, value))
}

/// nbdkit_parse_unsigned (an `unsigned int`).
pub fn parse_unsigned(what: &str, value: &str) -> Result<u32, String> {
    parse_u32(what, value)
}

/// nbdkit_parse_uint16_t.
pub fn parse_u16(what: &str, value: &str) -> Result<u16, String> {
    u16::try_from(parse_u64(what, value)?).map_err(|_| out_of_range(what, value))
}

/// nbdkit_parse_uint8_t.
pub fn parse_u8(what: &str, value: &str) -> Result<u8, String> {
    u8::try_from(parse_u64(what, value)?).map_err(|_| out_of_range(what, value))
}

/// nbdkit_parse_int (an `int`).
pub fn parse_int(what: &str, value: &str) -> Result<i32, String> {
    let (negative, magnitude) = parse_whole(what, value, false)?;
    let wide = if negative {
        0i128 - i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    i32::try_from(wide).map_err(|_| out_of_range(what, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_reads_c_prefixes() {
        assert_eq!(scan("0x1fe rest").len, 5);
        assert_eq!(scan("0x1fe rest").magnitude, Some(0x1fe));
        assert_eq!(scan("017").magnitude, Some(15));
        // An 8 is not an octal digit: "08" is 0 followed by "8".
        assert_eq!(
            scan("08"),
            Scanned {
                negative: false,
                magnitude: Some(0),
                len: 1
            }
        );
        assert_eq!(
            scan("  -12x"),
            Scanned {
                negative: true,
                magnitude: Some(12),
                len: 5
            }
        );
        assert_eq!(
            scan("0x"),
            Scanned {
                negative: false,
                magnitude: Some(0),
                len: 1
            }
        );
        assert_eq!(scan("abc").len, 0);
        assert_eq!(scan("-").len, 0);
        assert_eq!(scan("99999999999999999999").magnitude, None);
        assert_eq!(scan_decimal("0x10").len, 1);
        assert_eq!(scan_decimal("010").magnitude, Some(10));
    }

    #[test]
    fn saturation_is_strtoll_s() {
        assert_eq!(scan("99999999999999999999").saturating_i64(), i64::MAX);
        assert_eq!(scan("-99999999999999999999").saturating_i64(), i64::MIN);
        assert_eq!(scan("-9223372036854775808").saturating_i64(), i64::MIN);
        assert_eq!(scan("0xffffffffffffffff").saturating_i64(), i64::MAX);
        assert_eq!(scan("-5").saturating_i64(), -5);
    }

    #[test]
    fn whole_values_as_nbdkit_parse() {
        assert_eq!(parse_u8("byte", "255"), Ok(255));
        assert_eq!(parse_u8("byte", "+7"), Ok(7));
        assert_eq!(parse_u8("byte", " 0x10"), Ok(16));
        assert!(parse_u8("byte", "256").is_err());
        assert!(parse_u8("byte", "-1").is_err());
        assert!(parse_u8("byte", "0x").is_err());
        assert!(parse_u8("byte", "").is_err());
        assert!(parse_u8("byte", "1 ").is_err());
        assert!(parse_u8("byte", "09").is_err());
        assert_eq!(parse_u32("seed", "4294967295"), Ok(u32::MAX));
        assert!(parse_u32("seed", "4294967296").is_err());
        assert_eq!(parse_u64("n", "18446744073709551615"), Ok(u64::MAX));
        assert!(parse_u64("n", "18446744073709551616").is_err());
        assert_eq!(parse_int("bits", "-16"), Ok(-16));
        assert!(parse_int("bits", "2147483648").is_err());
        assert_eq!(parse_int("bits", "-2147483648"), Ok(i32::MIN));
    }
}

/// Base64 as nbdkit decodes it with GnuTLS (gnutls_base64_decode2): the standard alphabet,
/// white space ignored, `=` padding to a whole number of 4-character groups required.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let chars: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if !chars.len().is_multiple_of(4) {
        return Err("base64: the length is not a multiple of 4".into());
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let groups = chars.len() / 4;
    for (i, group) in chars.chunks_exact(4).enumerate() {
        let padding = group.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && i + 1 != groups) {
            return Err("base64: misplaced padding".into());
        }
        let mut value = 0u32;
        for &c in &group[..4 - padding] {
            value = value << 6 | u32::from(sextet(c).ok_or("base64: not a base64 character")?);
        }
        value <<= 6 * padding as u32;
        let bytes = value.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - padding]);
    }
    Ok(out)
}

#[cfg(test)]
mod base64_tests {
    use super::base64_decode;

    #[test]
    fn decodes_as_gnutls() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs bG8=\n").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbA==").unwrap(), b"hell");
        assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert_eq!(base64_decode("").unwrap(), b"");
        for bad in ["aGVsbG8", "aGVsbA=", "a", "aGVsbG8=x", "aG=sbG8=", "a===", "aGV*"] {
            assert!(base64_decode(bad).is_err(), "{bad}");
        }
    }
}
