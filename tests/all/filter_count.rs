//! The built-in `count` filter (nbdkit ≥ 1.36; Debian's 1.32.5 has none): at exit it logs the
//! bytes read, written, zeroed and trimmed successfully over every connection. The totals are
//! checked against the client's own requests and against what nbdkit's log filter records
//! of the same session.

use crate::support::*;

/// Two connections of known requests; failed requests (past the end) do not count.
const SESSION: &str = r#"
for i in range(3):
    h.pread(4096, i * 4096)
h.pwrite(b"x" * 1000, 10)
h.zero(65536, 0)
h.trim(8192, 0)
h.flush()
try:
    h.pread(512, h.get_size())
except nbd.Error:
    pass
"#;

/// read 3 × 4096 per connection, written 1000, zeroed 65536, trimmed 8192; two connections.
const EXPECTED: &str = "count bytes: read 24576, written 2000, zeroed 131072, trimmed 16384";

#[test]
fn totals_over_all_connections() {
    let dir = TempDir::new("count");
    let one = crate::differential::nbdsh_loose(&dir, "session", SESSION);
    let o = run_captive(&["-v", "--filter=count", "memory", "1M"], &format!("{one} && {one}"));
    assert_success(&o);
    let err = stderr(&o);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("count bytes:"))
        .map(str::trim_end)
        .collect();
    assert_eq!(lines.len(), 1, "{}", describe(&o));
    assert!(lines[0].ends_with(EXPECTED), "{}", describe(&o));
}

#[test]
fn totals_match_nbdkit_log_of_the_same_session() {
    let dir = TempDir::new("countlog");
    let one = crate::differential::nbdsh_loose(&dir, "session", SESSION);
    let log = dir.str("log");
    let o = nbdkit_captive(
        &["--filter=log", "memory", "1M", &format!("logfile={log}")],
        &format!("{one} && {one}"),
    );
    assert_success(&o);
    let text = std::fs::read_to_string(&log).unwrap();
    // Sum the count= of each request whose ...ACTION line returned 0.
    let mut totals = [0u64; 4];
    for line in text.lines() {
        for (i, action) in ["Read", "Write", "Zero", "Trim"].iter().enumerate() {
            if line.contains(&format!(" {action} id=")) {
                let id = field(line, "id=");
                let count = u64::from_str_radix(field(line, "count=0x"), 16).unwrap();
                let conn = field(line, "connection=");
                let ok = text
                    .lines()
                    .any(|l| l.contains(&format!("connection={conn} ...{action} id={id} return=0")));
                if ok {
                    totals[i] += count;
                }
            }
        }
    }
    let theirs = format!(
        "count bytes: read {}, written {}, zeroed {}, trimmed {}",
        totals[0], totals[1], totals[2], totals[3]
    );
    assert_eq!(theirs, EXPECTED, "nbdkit's log of the session:\n{text}");
}

/// The value after `key` up to the next space.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line.find(key).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len();
    line[at..].split(' ').next().unwrap()
}
