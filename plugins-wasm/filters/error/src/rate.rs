//! Error rates as error.c reads and applies them. Plain Rust, unit-tested natively.

use std::cmp::Ordering;

/// The length of the decimal floating-point number at the start of `s` (strtod's syntax for
/// what sscanf's `%lg` reads: sign, digits with one optional point, optional exponent, or
/// inf/infinity/nan), white space before it included; 0 when there is none.
fn float_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let lower = s[i..].to_ascii_lowercase();
    for word in ["infinity", "inf", "nan"] {
        if lower.starts_with(word) {
            return i + word.len();
        }
    }
    let digits_from = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    let int_end = digits_from(i);
    let mut end = int_end;
    if b.get(end) == Some(&b'.') {
        end = digits_from(end + 1);
    }
    if end == i || (end == i + 1 && b[i] == b'.') {
        return 0;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut j = end + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_end = digits_from(j);
        if exp_end > j {
            end = exp_end;
        }
    }
    end
}

/// error.c's parse_error_rate: `N%` (a percentage) or `0..1` (a probability), 0 to 1.
pub fn parse(value: &str) -> Result<f64, String> {
    let len = float_len(value);
    let number: Option<f64> = (len > 0).then(|| value[..len].trim_start().parse().ok()).flatten();
    let rate = match (number, &value[len..]) {
        (Some(d), "%") => d / 100.0,
        (Some(d), "") => d,
        _ => return Err(format!("could not parse rate '{value}'")),
    };
    // As error.c's `d < 0 || d > 1`, which lets a NaN through.
    let below = rate.partial_cmp(&0.0) == Some(Ordering::Less);
    let above = rate.partial_cmp(&1.0) == Some(Ordering::Greater);
    if below || above {
        return Err(format!("rate out of range: '{value}' parsed as {rate}"));
    }
    Ok(rate)
}

/// A rate of 1 (100%) or more always injects, without drawing a random number.
pub fn always(rate: f64) -> bool {
    rate >= 1.0
}

/// Whether a random draw in 0..=u32::MAX injects at `rate` (error.c works in 32 bits).
pub fn fires(draw: u64, rate: f64) -> bool {
    // error.c's `rand >= rate * UINT32_MAX` declines; a NaN rate never declines.
    matches!(
        (draw as f64).partial_cmp(&(rate * f64::from(u32::MAX))),
        Some(Ordering::Less) | None
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_error_c_does() {
        assert_eq!(parse("1%"), Ok(0.01));
        assert_eq!(parse("100%"), Ok(1.0));
        assert_eq!(parse("0.5"), Ok(0.5));
        assert_eq!(parse(" 1e-1"), Ok(0.1));
        assert_eq!(parse("0"), Ok(0.0));
        assert_eq!(parse(".25"), Ok(0.25));
        for bad in ["", "%", "1 %", "50%%", "abc", "2", "101%", "-1%", "0.5x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn draws_fire_below_the_rate() {
        assert!(fires(0, 0.5));
        assert!(!fires(u64::from(u32::MAX), 0.5));
        assert!(fires(u64::from(u32::MAX / 2 - 1), 0.5));
        assert!(!fires(u64::from(u32::MAX / 2 + 1), 0.5));
        assert!(always(1.0) && !always(0.999));
    }
}
