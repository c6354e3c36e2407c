//! The built-in `truncate` filter: `truncate=`, `round-up=`, `round-down=` change the size;
//! past the real end reads are zeroes and only zeroes may be written. Against nbdkit.

use crate::support::*;

#[test]
fn sizes_bytes_and_maps_as_nbdkit() {
    let dir = TempDir::new("trunc");
    let (img, _) = sparse_image(&dir, "s.img", (1 << 20) + 4096, &[(0, 8192), (1 << 20, 4096)]);
    let odd = dir.str("odd.img");
    std::fs::write(&odd, pattern(52, 1001000)).unwrap();
    for (file, params) in [
        (&img, &["truncate=3M"][..]),
        (&img, &["truncate=500000"]),
        (&odd, &["round-up=4k"]),
        (&odd, &["round-down=4k"]),
        (&odd, &["truncate=1M", "round-up=64k"]),
    ] {
        let mut args = vec!["--filter=truncate", "file", file.as_str()];
        args.extend(params);
        same_as_nbdkit(&args, &format!("{INFO_AND_MAP} && nbdcopy \"$uri\" - | md5sum"));
    }
}

#[test]
fn writes_past_the_real_end_must_be_zeroes() {
    let dir = TempDir::new("truncw");
    let (img, _) = disk(&dir, "d.img", 53, 4096);
    let py = r#"
h.pwrite(bytes(100), 5000)
print("zeroes ok")
try:
    h.pwrite(b"x", 5000)
    print("data ok")
except nbd.Error as e:
    print("data", e.errno)
h.zero(1000, 6000)
h.trim(1000, 6000)
print("read", h.pread(2000, 4000)[96:] == bytes(1904))
"#;
    let (ours, theirs) = both(
        &["--filter=truncate", "file", &img, "truncate=8192"],
        &nbdsh(&dir, "w", py),
    );
    assert_eq!(ours, theirs);
    assert_eq!(value(&ours, "data"), "ENOSPC", "{ours}");
    assert_eq!(value(&ours, "read"), "True", "{ours}");
}
