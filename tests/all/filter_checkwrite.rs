//! The built-in `checkwrite` filter: copying an export onto itself succeeds, a different
//! write fails with EIO, and the plugin is never written. Against nbdkit's checkwrite.

use crate::support::*;
use std::fs;

#[test]
fn copying_onto_itself_passes_and_a_change_fails() {
    tool("nbdcopy");
    tool("qemu-img");
    let dir = TempDir::new("checkw");
    let (img, data) = sparse_image(&dir, "s.img", 4 << 20, &[(0, 8192), (1 << 20, 300 << 10)]);
    let args = ["--filter=checkwrite", "file", &img];
    let py = r#"
try:
    h.pwrite(b"different", 0)
    print("change ok")
except nbd.Error as e:
    print("change", e.errno)
try:
    h.zero(4096, 0)
    print("zero-data ok")
except nbd.Error as e:
    print("zero-data", e.errno)
h.zero(65536, 2 * 1048576)
print("zero-hole ok")
"#;
    let script = format!(
        "{INFO_AND_MAP} && nbdcopy \"$uri\" \"$uri\" && qemu-img convert -n -f raw -O raw \"$nbd\" \"$nbd\" && echo COPIED && {}",
        nbdsh(&dir, "c", py)
    );
    let out = same_as_nbdkit(&args, &script);
    assert!(out.contains("COPIED"), "{out}");
    assert_eq!(value(&out, "change"), "EIO", "{out}");
    assert_eq!(value(&out, "zero-data"), "EIO", "{out}");
    assert!(fs::read(&img).unwrap() == data, "the plugin was written");
}
