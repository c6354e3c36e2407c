//! The built-in `zero` plugin against nbdkit's zero: a zero-length export with the same
//! flags, no parameter accepted, and every read refused by the server.

use crate::differential::*;
use crate::support::*;

#[test]
fn flags_and_size_match_nbdkit() {
    let out = same_as_nbdkit(&["zero"], NBDINFO);
    assert!(out.contains("export-size: 0"), "{out}");
    assert!(out.contains("is_read_only: true"), "{out}");
}

#[test]
fn takes_no_parameters_as_nbdkit() {
    both_refuse(&["zero", "size=1"]);
}

#[test]
fn reads_and_writes_are_refused_as_with_nbdkit() {
    let dir = TempDir::new("zeroops");
    let py = r#"
outcome("pread", lambda: h.pread(1, 0))
outcome("pwrite", lambda: h.pwrite(b"x", 0))
outcome("cache", lambda: h.cache(1, 0))
"#;
    let out = same_as_nbdkit(&["zero"], &nbdsh_loose(&dir, "ops", py));
    assert!(out.contains("pread EINVAL"), "{out}");
}
