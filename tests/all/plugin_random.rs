//! The built-in `random` plugin against nbdkit's: the same bytes for the same seed, the same
//! flags, writes that must match, trim and zero refused; a copy to itself succeeds.

use crate::differential::*;
use crate::support::*;
use std::fs;

#[test]
fn bytes_match_nbdkit_for_the_same_seed() {
    tool("nbdcopy");
    let dir = TempDir::new("random");
    for (size, seed) in [("1M", "seed=1"), ("100001", "seed=4294967295"), ("64K", "seed=0")] {
        let args = ["random", size, seed];
        let (ours, theirs) = (dir.str("ours"), dir.str("theirs"));
        let copy = |out: &str| format!("nbdcopy \"$uri\" {}", shell_quote(out));
        assert_success(&run_captive(&args, &copy(&ours)));
        assert_success(&nbdkit_captive(&args, &copy(&theirs)));
        let (ours, theirs) = (fs::read(ours).unwrap(), fs::read(theirs).unwrap());
        assert!(ours == theirs, "{args:?}: bytes differ from nbdkit's");
    }
}

#[test]
fn flags_writes_and_errors_match_nbdkit() {
    let dir = TempDir::new("randomops");
    let py = r#"
outcome("pread", lambda: h.pread(100, 12345))
outcome("rewrite", lambda: h.pwrite(h.pread(4096, 8192), 8192))
outcome("other-write", lambda: h.pwrite(b"\0" * 4096, 8192))
outcome("trim", lambda: h.trim(4096, 0))
outcome("zero", lambda: h.zero(4096, 0))
outcome("cache", lambda: h.cache(4096, 0))
"#;
    let out = same_as_nbdkit(
        &["random", "1M", "seed=77"],
        &format!("{NBDINFO} && {}", nbdsh_loose(&dir, "ops", py)),
    );
    assert!(out.contains("rewrite ok") && out.contains("other-write EIO"), "{out}");
    assert!(out.contains("trim EIO") && out.contains("zero EIO"), "{out}");
}

#[test]
fn copying_to_itself_succeeds() {
    tool("nbdcopy");
    let o = run_captive(&["random", "8M"], "nbdcopy \"$uri\" \"$uri\" && echo COPIED");
    assert!(assert_success(&o).contains("COPIED"), "{}", describe(&o));
}

#[test]
fn without_a_seed_every_connection_sees_the_same_bytes() {
    let dir = TempDir::new("randomseed");
    let read = nbdsh_loose(&dir, "read", "outcome('pread', lambda: h.pread(4096, 0))\n");
    let out = assert_success(&run_captive(
        &["-t", "4", "random", "1M"],
        &format!("{read} && {read} && {read}"),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|l| *l == lines[0]), "{out}");
}
