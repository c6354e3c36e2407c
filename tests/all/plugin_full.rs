//! The built-in `full` plugin against nbdkit's full: reads are zeros, every write, zero and
//! trim fails with ENOSPC (a fast zero with ENOTSUP), the map is one hole, size is required.

use crate::differential::*;
use crate::support::*;

#[test]
fn flags_size_and_map_match_nbdkit() {
    same_as_nbdkit(&["full", "100M"], &format!("{NBDINFO} && {MAP}"));
}

#[test]
fn size_is_required_as_with_nbdkit() {
    both_refuse(&["full"]);
}

#[test]
fn errors_match_nbdkit() {
    let dir = TempDir::new("fullops");
    let py = r#"
outcome("pread", lambda: h.pread(4096, 8192))
outcome("pwrite", lambda: h.pwrite(b"x" * 512, 0))
outcome("pwrite-fua", lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA))
outcome("zero", lambda: h.zero(4096, 0))
outcome("zero-fast", lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO))
outcome("trim", lambda: h.trim(4096, 0))
outcome("flush", lambda: h.flush())
outcome("cache", lambda: h.cache(4096, 0))
"#;
    let out = same_as_nbdkit(&["full", "1M"], &nbdsh_loose(&dir, "ops", py));
    for expected in ["pwrite ENOSPC", "zero ENOSPC", "zero-fast ENOTSUP", "trim ENOSPC"] {
        assert!(out.contains(expected), "{expected}\n{out}");
    }
    assert!(
        out.contains(&format!("pread ok 4096:{}", sha256_of_zeros(4096))),
        "{out}"
    );
}

/// The SHA-256 nbdsh prints for `n` zero bytes, computed by Python too.
fn sha256_of_zeros(n: usize) -> String {
    let o = run_tool(
        "/usr/bin/python3",
        &[
            "-c",
            &format!("import hashlib; print(hashlib.sha256(bytes({n})).hexdigest())"),
        ],
        None,
    );
    assert_success(&o).trim().to_owned()
}
