//! The built-in `xz` filter: the decompressed content of an .xz file, read-only, byte for
//! byte as nbdkit's xz filter gives it, read at random across blocks and streams, and files
//! with blocks over `xz-max-block` refused.

use crate::support::*;
use std::fs;

/// `dir/NAME` (`len` bytes: pattern data with a run of zeroes) compressed by xz in blocks of
/// `block` bytes.
fn xz(dir: &TempDir, name: &str, seed: u64, len: usize, block: &str) -> (String, Vec<u8>) {
    let mut data = pattern(seed, len / 2);
    data.resize(len, 0);
    let raw = dir.str(name);
    fs::write(&raw, &data).unwrap();
    assert_success(&run_tool(
        "xz",
        &["-kf", "-1", &format!("--block-size={block}"), &raw],
        None,
    ));
    (format!("{raw}.xz"), data)
}

#[test]
fn content_and_flags_as_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("xz");
    let (file, data) = xz(&dir, "d.raw", 31, 5 << 20, "1MiB");
    let out = dir.str("out");
    let script = format!("{INFO_AND_MAP} && nbdcopy \"$uri\" {}", shell_quote(&out));
    let o = same_as_nbdkit(&["--filter=xz", "file", &file, "xz-max-depth=2"], &script);
    assert!(o.contains("is_read_only: true"), "{o}");
    assert!(fs::read(&out).unwrap() == data);
}

#[test]
fn random_reads_across_blocks_and_streams() {
    let dir = TempDir::new("xzrand");
    let (a, a_data) = xz(&dir, "a.raw", 32, 3 << 20, "256KiB");
    let (b, b_data) = xz(&dir, "b.raw", 33, 1 << 20, "100KiB");
    let two = dir.str("two.xz");
    let mut bytes = fs::read(&a).unwrap();
    bytes.extend(vec![0; 8]); // stream padding
    bytes.extend(fs::read(&b).unwrap());
    fs::write(&two, bytes).unwrap();
    let data: Vec<u8> = a_data.into_iter().chain(b_data).collect();
    let expected = dir.str("expected");
    fs::write(&expected, &data).unwrap();
    let py = r#"
import os, random
want = open(os.environ["EXPECTED"], "rb").read()
size = h.get_size()
print("size", size == len(want))
r = random.Random(7)
bad = 0
for _ in range(300):
    off = r.randrange(0, size - 1)
    n = r.randrange(1, min(300000, size - off))
    if h.pread(n, off) != want[off:off + n]:
        bad += 1
print("bad", bad)
"#;
    let o = run_captive(
        &["--filter=xz", "file", &two, "xz-max-depth=3"],
        &format!("EXPECTED={} {}", shell_quote(&expected), nbdsh(&dir, "r", py)),
    );
    let out = assert_success(&o);
    assert_eq!(value(&out, "size"), "True", "{}", describe(&o));
    assert_eq!(value(&out, "bad"), "0", "{}", describe(&o));
}

#[test]
fn blocks_over_the_maximum_are_refused() {
    let dir = TempDir::new("xzmax");
    let (file, _) = xz(&dir, "d.raw", 34, 2 << 20, "1MiB");
    let script = "nbdinfo --size \"$uri\" 2>/dev/null || echo REFUSED";
    let (ours, theirs) = both(&["--filter=xz", "file", &file, "xz-max-block=512K"], script);
    assert_eq!((ours.trim(), theirs.trim()), ("REFUSED", "REFUSED"));
    let (ours, theirs) = both(&["--filter=xz", "file", &file, "xz-max-block=1M"], script);
    assert_eq!((ours.trim(), theirs.trim()), ("2097152", "2097152"));
}
