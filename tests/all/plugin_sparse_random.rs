//! The built-in `sparse-random` plugin against nbdkit's: the same bytes and the same map for
//! the same seed (percent, runlength, random-content; unaligned reads, which nbdkit seeds
//! from the request's offset), writes that must match, trim and zero only on holes.

use crate::differential::*;
use crate::support::*;
use std::fs;

#[test]
fn bytes_and_map_match_nbdkit_for_the_same_seed() {
    tool("nbdcopy");
    let dir = TempDir::new("sparse");
    for args in [
        &["sparse-random", "64M", "seed=1"][..],
        &["sparse-random", "64M", "seed=2", "percent=50", "runlength=262144"],
        &[
            "sparse-random",
            "16M",
            "seed=3",
            "percent=30",
            "runlength=65536",
            "random-content=true",
        ],
        &["sparse-random", "8M", "seed=4", "percent=100"],
        &["sparse-random", "8M", "seed=5", "percent=0"],
        &[
            "sparse-random",
            "10000001",
            "seed=6",
            "percent=25.5",
            "runlength=100000",
        ],
    ] {
        let (ours, theirs) = (dir.str("ours"), dir.str("theirs"));
        let copy = |out: &str| format!("nbdcopy \"$uri\" {} && {MAP}", shell_quote(out));
        let our_map = assert_success(&run_captive(args, &copy(&ours)));
        let their_map = assert_success(&nbdkit_captive(args, &copy(&theirs)));
        assert_eq!(our_map, their_map, "{args:?}: maps differ");
        let (ours, theirs) = (fs::read(ours).unwrap(), fs::read(theirs).unwrap());
        assert!(ours == theirs, "{args:?}: bytes differ from nbdkit's");
    }
}

#[test]
fn unaligned_reads_writes_trims_match_nbdkit() {
    let dir = TempDir::new("sparseops");
    let py = r#"
size = h.get_size()
for offset in (0, 1, 4095, 4096 * 100 + 7, size - 5000):
    for count in (1, 100, 4096, 9000):
        if offset + count <= size:
            outcome("pread %d %d" % (offset, count), lambda: h.pread(count, offset))
            outcome("rewrite %d %d" % (offset, count), lambda: h.pwrite(h.pread(count, offset), offset))
for block in range(0, size // 4096, 97):
    outcome("trim %d" % block, lambda: h.trim(4096, block * 4096))
    outcome("zero %d" % block, lambda: h.zero(4096, block * 4096))
outcome("flush", lambda: h.flush())
"#;
    let args = ["sparse-random", "4M", "seed=9", "percent=50", "runlength=65536"];
    let out = same_as_nbdkit(&args, &format!("{NBDINFO} && {}", nbdsh_loose(&dir, "ops", py)));
    assert!(out.contains("trim ") && out.contains(" EIO"), "{out}");
}

#[test]
fn copying_to_itself_succeeds() {
    tool("nbdcopy");
    let o = run_captive(&["sparse-random", "1G"], "nbdcopy \"$uri\" \"$uri\" && echo COPIED");
    assert!(assert_success(&o).contains("COPIED"), "{}", describe(&o));
}

#[test]
fn bad_settings_are_refused_as_by_nbdkit() {
    for bad in ["percent=101", "percent=x", "runlength=0", "seed=-1", "seed=4294967296"] {
        both_refuse(&["sparse-random", "1M", bad]);
    }
}
