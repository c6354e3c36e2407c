//! nbdkit's value syntax, shared by the command line and the `host` import so that a size or
//! boolean means the same thing to every component.

/// nbdkit_parse_size: a decimal number with an optional case-insensitive suffix
/// (b ×1, s ×512, k ×2^10, m ×2^20, g ×2^30, t ×2^40, p ×2^50, e ×2^60), at most i64::MAX.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("could not parse size string ({value})"));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "s" => 9,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        "e" => 60,
        _ => return Err(format!("could not parse size: unknown suffix '{suffix}' ({value})")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("size value is too large ({value})"))
}

/// nbdkit_parse_bool: 1/true/t/yes/y/on and 0/false/f/no/n/off, any case.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Ok(false),
        _ => Err(format!("could not decipher boolean ({value})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2s"), Ok(1024));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("7e"), Ok(7 << 60));
        assert_eq!(parse_size("9223372036854775807"), Ok(i64::MAX as u64));
        assert!(parse_size("8e").is_err());
        assert!(parse_size("9223372036854775808").is_err());
        assert!(parse_size("banana").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn bools() {
        for yes in ["1", "true", "T", "yes", "Y", "on"] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["0", "FALSE", "f", "no", "n", "off"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        assert!(parse_bool("maybe").is_err());
    }
}
