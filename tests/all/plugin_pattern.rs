//! The built-in `pattern` plugin against nbdkit's pattern: the same bytes (whole copies and
//! reads at every alignment, to the last byte of the largest disk), flags and map.

use crate::differential::*;
use crate::support::*;

#[test]
fn bytes_match_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("pattern");
    for size in ["1M", "1001", "0"] {
        let (ours, theirs) = (dir.str("ours"), dir.str("theirs"));
        let copy = |out: &str| format!("nbdcopy \"$uri\" {}", shell_quote(out));
        assert_success(&run_captive(&["pattern", size], &copy(&ours)));
        assert_success(&nbdkit_captive(&["pattern", size], &copy(&theirs)));
        let (ours, theirs) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
        assert!(ours == theirs, "size {size}: bytes differ from nbdkit's");
    }
}

#[test]
fn flags_and_map_match_nbdkit() {
    same_as_nbdkit(&["pattern", "size=10M"], &format!("{NBDINFO} && {MAP}"));
    same_as_nbdkit(&["pattern"], NBDINFO);
}

#[test]
fn unaligned_reads_and_the_largest_disk_match_nbdkit() {
    let dir = TempDir::new("patternops");
    let py = r#"
size = h.get_size()
for offset in range(0, 24):
    for count in (1, 7, 8, 9, 17):
        outcome("pread %d %d" % (offset, count), lambda: h.pread(count, 0x12345678 + offset))
outcome("last", lambda: h.pread(13, size - 13))
outcome("pwrite", lambda: h.pwrite(b"x", 0))
"#;
    let out = same_as_nbdkit(&["pattern", "9223372036854775807"], &nbdsh_loose(&dir, "ops", py));
    assert!(out.contains("last ok fffffffffff07fffffffffffff"), "{out}");
}
