//! The built-in `readonly` filter (nbdkit ≥ 1.38, which Debian's 1.32 does not have):
//! without `readonly-file` the export is what nbdkit -r serves; with it, writes fail with
//! EPERM exactly while the file exists.

use crate::support::*;
use std::fs;

#[test]
fn without_a_file_it_is_nbdkit_minus_r() {
    let dir = TempDir::new("ro");
    let (img, data) = sparse_image(&dir, "s.img", 2 << 20, &[(0, 4096)]);
    let write = format!("{} || echo REFUSED", nbdsh(&dir, "w", "h.pwrite(b'x', 0)\n"));
    let script = format!("{INFO_AND_MAP} && {write}");
    let ours = assert_success(&run_captive(&["--filter=readonly", "file", &img], &script));
    let theirs = assert_success(&nbdkit_captive(&["-r", "file", &img], &script));
    assert_eq!(ours, theirs);
    assert!(
        ours.contains("is_read_only: true") && ours.contains("REFUSED"),
        "{ours}"
    );
    assert!(fs::read(&img).unwrap() == data);
}

#[test]
fn readonly_file_switches_writes_off_and_on() {
    let dir = TempDir::new("rofile");
    let (img, _) = disk(&dir, "d.img", 65, 1 << 20);
    let flag = dir.str("ro");
    let py = r#"
import os
def attempt(name):
    try:
        h.pwrite(b"w" * 512, 0)
        h.zero(512, 4096)
        print(name, "ok")
    except nbd.Error as e:
        print(name, e.errno)
attempt("before")
open(os.environ["FLAG"], "w").close()
attempt("while")
os.remove(os.environ["FLAG"])
attempt("after")
print("reads", len(h.pread(512, 0)))
"#;
    let o = run_captive(
        &["--filter=readonly", "file", &img, &format!("readonly-file={flag}")],
        &format!("FLAG={} {}", shell_quote(&flag), nbdsh(&dir, "f", py)),
    );
    let out = assert_success(&o);
    assert_eq!(value(&out, "before"), "ok", "{}", describe(&o));
    assert_eq!(value(&out, "while"), "EPERM", "{}", describe(&o));
    assert_eq!(value(&out, "after"), "ok", "{}", describe(&o));
    assert_eq!(value(&out, "reads"), "512");
}
