//! The built-in `null` plugin against nbdkit's null: the same flags and size (with and
//! without a size), block status as one hole, and every call succeeding, reads as zeros.

use crate::differential::*;
use crate::support::*;

#[test]
fn flags_size_and_map_match_nbdkit() {
    for args in [&["null", "1G"][..], &["null", "size=3000"], &["null"]] {
        let out = same_as_nbdkit(args, &format!("{NBDINFO} && {MAP}"));
        assert!(out.contains("can_multi_conn: true"), "{out}");
    }
    let out = same_as_nbdkit(&["null", "1M"], MAP);
    assert!(out.contains("hole,zero"), "{out}");
}

#[test]
fn every_call_succeeds_as_with_nbdkit() {
    let dir = TempDir::new("nullops");
    let py = r#"
outcome("pread", lambda: h.pread(4096, 1 << 29))
outcome("pwrite-fua", lambda: h.pwrite(b"\xff" * 4096, 0, nbd.CMD_FLAG_FUA))
outcome("pread-after-write", lambda: h.pread(4096, 0))
outcome("zero", lambda: h.zero(1 << 20, 0))
outcome("zero-fast", lambda: h.zero(1 << 20, 0, nbd.CMD_FLAG_FAST_ZERO))
outcome("trim", lambda: h.trim(1 << 20, 4096))
outcome("flush", lambda: h.flush())
outcome("cache", lambda: h.cache(65536, 0))
outcome("block-status", lambda: h.block_status(1 << 20, 0, lambda *a: 0))
outcome("past-end", lambda: h.pread(512, (1 << 30) - 256))
"#;
    let out = same_as_nbdkit(&["null", "1G"], &nbdsh_loose(&dir, "ops", py));
    let read = |label: &str| value(&out, label);
    assert_eq!(read("pread"), read("pread-after-write"), "{out}");
    assert!(out.contains("past-end EINVAL"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains(" ok")).count(), 9, "{out}");
}

#[test]
fn copies_a_gigabyte_of_zeros() {
    tool("nbdcopy");
    let o = run_captive(
        &["null", "1G"],
        "nbdcopy \"$uri\" - | cmp -n 1073741824 - /dev/zero && echo ZEROS",
    );
    assert!(assert_success(&o).contains("ZEROS"), "{}", describe(&o));
}
