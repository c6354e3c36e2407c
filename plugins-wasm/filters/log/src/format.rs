//! The lines of nbdkit's log filter (filters/log/output.c and log.c of nbdkit 1.32): a UTC
//! timestamp with microseconds, the connection, the action, the request id and its fields,
//! `...` after a call's start and before its end. Plain Rust, unit-tested natively.

use std::fmt::Write;

/// Which of nbdkit's three kinds of log entry a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A call starts: the line ends with " ...".
    Enter,
    /// A call ends: the action is written "...ACTION".
    Leave,
    /// A one-line event (Ready, Connect, Disconnect).
    Print,
}

/// "YYYY-MM-DD HH:MM:SS.uuuuuu" in UTC (gmtime_r, strftime "%F %T", ".%06ld").
pub fn timestamp(secs: u64, micros: u32) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = calendar::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{micros:06}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// One log line (with its newline): `connection` is None for calls that concern no
/// connection, `id` 0 for none; `fields` may be empty.
pub fn line(stamp: &str, connection: Option<u64>, entry: Entry, act: &str, id: u64, fields: &str) -> String {
    let mut out = String::with_capacity(96 + fields.len());
    out.push_str(stamp);
    if let Some(c) = connection {
        let _ = write!(out, " connection={c}");
    }
    out.push(' ');
    if entry == Entry::Leave {
        out.push_str("...");
    }
    out.push_str(act);
    if id != 0 {
        let _ = write!(out, " id={id}");
    }
    if !fields.is_empty() {
        out.push(' ');
        out.push_str(fields);
    }
    if entry == Entry::Enter {
        out.push_str(" ...");
    }
    out.push('\n');
    out
}

/// nbdkit's shell_quote (common/utils/quote.c): as is when every character is safe,
/// otherwise in double quotes with `$`, `` ` ``, `\` and `"` escaped.
pub fn shell_quote(s: &str) -> String {
    const SAFE: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_=,:/";
    if !s.is_empty() && s.chars().all(|c| SAFE.contains(c)) {
        return s.into();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '$' | '`' | '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(timestamp(0, 0), "1970-01-01 00:00:00.000000");
        // 2020-08-06 02:07:23.080415, the man page's example.
        assert_eq!(timestamp(1_596_679_643, 80_415), "2020-08-06 02:07:23.080415");
        assert_eq!(timestamp(951_782_400, 1), "2000-02-29 00:00:00.000001");
        assert_eq!(timestamp(4_102_444_799, 999_999), "2099-12-31 23:59:59.999999");
    }

    #[test]
    fn lines_have_nbdkits_shape() {
        let t = "T";
        assert_eq!(
            line(t, None, Entry::Print, "Ready", 0, "thread_model=3"),
            "T Ready thread_model=3\n"
        );
        assert_eq!(
            line(t, None, Entry::Enter, "Preconnect", 1, "readonly=0"),
            "T Preconnect id=1 readonly=0 ...\n"
        );
        assert_eq!(
            line(t, Some(2), Entry::Enter, "Flush", 5, ""),
            "T connection=2 Flush id=5 ...\n"
        );
        assert_eq!(
            line(t, Some(2), Entry::Leave, "Flush", 5, "return=0"),
            "T connection=2 ...Flush id=5 return=0\n"
        );
        assert_eq!(
            line(t, Some(1), Entry::Print, "Disconnect", 0, "transactions=6"),
            "T connection=1 Disconnect transactions=6\n"
        );
    }

    #[test]
    fn quoting_is_nbdkits() {
        assert_eq!(shell_quote(""), "\"\"");
        assert_eq!(shell_quote("disk-1.img"), "disk-1.img");
        assert_eq!(shell_quote("a b"), "\"a b\"");
        assert_eq!(shell_quote("$x\"`\\"), "\"\\$x\\\"\\`\\\\\"");
    }
}
