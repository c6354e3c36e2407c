//! The built-in `gzip` filter: the decompressed content of a .gz file, read-only, byte for
//! byte as nbdkit's gzip filter and `gzip -d` give it.

use crate::support::*;
use std::fs;

/// `dir/NAME` compressed with gzip: data and zeroes, so the ratio is not 1.
fn gz(dir: &TempDir, name: &str, seed: u64) -> (String, Vec<u8>) {
    let mut data = pattern(seed, 700_000);
    data.extend(vec![0; 1 << 20]);
    let raw = dir.str(name);
    fs::write(&raw, &data).unwrap();
    assert_success(&run_tool("gzip", &["-kf", &raw], None));
    (format!("{raw}.gz"), data)
}

#[test]
fn content_and_flags_as_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("gzip");
    let (file, data) = gz(&dir, "d.raw", 21);
    let out = dir.str("out");
    let script = format!(
        "{INFO_AND_MAP} && nbdcopy \"$uri\" {} && {} || echo WRITE-REFUSED",
        shell_quote(&out),
        nbdsh(&dir, "w", "h.pwrite(b'x', 0)\n")
    );
    let o = same_as_nbdkit(&["--filter=gzip", "file", &file], &script);
    assert!(o.contains("is_read_only: true") && o.contains("WRITE-REFUSED"), "{o}");
    assert!(fs::read(&out).unwrap() == data);
}

#[test]
fn concatenated_members_as_gzip_does() {
    let dir = TempDir::new("gzipcat");
    let (a, a_data) = gz(&dir, "a.raw", 22);
    let (b, b_data) = gz(&dir, "b.raw", 23);
    let both_gz = dir.str("both.gz");
    let mut bytes = fs::read(&a).unwrap();
    bytes.extend(fs::read(&b).unwrap());
    fs::write(&both_gz, bytes).unwrap();
    let out = dir.str("out");
    assert_success(&run_captive(
        &["--filter=gzip", "file", &both_gz],
        &format!("nbdcopy \"$uri\" {}", shell_quote(&out)),
    ));
    let want: Vec<u8> = a_data.into_iter().chain(b_data).collect();
    assert!(fs::read(&out).unwrap() == want);
}

#[test]
fn a_file_that_is_not_gzip_fails_the_open() {
    let dir = TempDir::new("gzipbad");
    let (img, _) = disk(&dir, "not.gz", 24, 65536);
    let o = run_captive(
        &["--filter=gzip", "file", &img],
        "nbdinfo --size \"$uri\" || echo REFUSED",
    );
    assert!(assert_success(&o).contains("REFUSED"), "{}", describe(&o));
}
