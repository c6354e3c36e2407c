//! The built-in `ones` plugin (nbdkit ≥ 1.36; Debian's 1.32.5 has none): reads are 0xff (or
//! `byte=`), writes are thrown away. Its flags are those of nbdkit's null (ones.c is null.c
//! with another byte and a data extent), its map that of a disk without holes (nbdkit's
//! pattern), and its bytes those nbdkit's data plugin makes of `0xff*SIZE`.

use crate::differential::*;
use crate::support::*;

#[test]
fn flags_match_nbdkit_null() {
    // The `content:` line is what file(1) makes of the bytes, which differ by design.
    let script = format!("{NBDINFO} | grep -v '^[[:space:]]*content: '");
    let (ours, theirs) = (
        run_captive(&["ones", "1M"], &script),
        nbdkit_captive(&["null", "1M"], &script),
    );
    assert_eq!(assert_success(&ours), assert_success(&theirs));
}

#[test]
fn map_is_all_data_as_nbdkit_pattern() {
    let (ours, theirs) = (
        run_captive(&["ones", "1M"], MAP),
        nbdkit_captive(&["pattern", "1M"], MAP),
    );
    let ours = assert_success(&ours);
    assert_eq!(ours, assert_success(&theirs));
    assert!(ours.contains("data"), "{ours}");
}

#[test]
fn bytes_match_nbdkit_data() {
    tool("nbdcopy");
    let dir = TempDir::new("ones");
    for (args, expression) in [
        (vec!["ones", "size=100000"], "0xff*100000"),
        (vec!["ones", "100000", "byte=0x55"], "0x55*100000"),
        (vec!["ones", "100000", "byte=0"], "0*100000"),
    ] {
        let (ours, theirs) = (dir.str("ours"), dir.str("theirs"));
        let copy = |out: &str| format!("nbdcopy \"$uri\" {}", shell_quote(out));
        assert_success(&run_captive(&args, &copy(&ours)));
        assert_success(&nbdkit_captive(&["data", expression], &copy(&theirs)));
        let (ours, theirs) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
        assert_eq!(ours.len(), 100_000);
        assert!(ours == theirs, "{args:?}: bytes differ from nbdkit data '{expression}'");
    }
}

#[test]
fn writes_are_discarded() {
    let dir = TempDir::new("onesops");
    let py = r#"
outcome("pwrite", lambda: h.pwrite(b"\0" * 512, 0, nbd.CMD_FLAG_FUA))
outcome("pread", lambda: h.pread(8, 0))
outcome("zero", lambda: h.zero(512, 0, nbd.CMD_FLAG_FAST_ZERO))
outcome("trim", lambda: h.trim(512, 0))
outcome("pread-again", lambda: h.pread(8, 0))
"#;
    let out = assert_success(&run_captive(&["ones", "1M"], &nbdsh_loose(&dir, "ops", py)));
    assert_eq!(
        out,
        "pwrite ok\npread ok ffffffffffffffff\nzero ok\ntrim ok\npread-again ok ffffffffffffffff\n"
    );
}

#[test]
fn a_bad_byte_is_refused() {
    for bad in ["byte=256", "byte=-1", "byte=0x"] {
        assert_exit1(&run_captive(&["ones", "1M", bad], "true"));
    }
}
