//! The built-in `blocksize-policy` filter: the block sizes it advertises, and with
//! `blocksize-error-policy=error` the requests it refuses, against nbdkit's.

use crate::support::*;

const REQUESTS: &str = r#"
for name, f in [
    ("small", lambda: h.pread(100, 0)),
    ("unaligned", lambda: h.pread(4096, 100)),
    ("aligned", lambda: h.pread(4096, 4096)),
    ("large", lambda: h.pread(2 * 1048576, 0)),
    ("write", lambda: h.pwrite(b"x" * 512, 512)),
    ("trim", lambda: h.trim(100, 0)),
]:
    try:
        f()
        print(name, "ok")
    except nbd.Error as e:
        print(name, e.errno)
"#;

#[test]
fn sizes_and_policy_as_nbdkit() {
    let dir = TempDir::new("bsp");
    let (img, _) = disk(&dir, "d.img", 67, 4 << 20);
    let sets: &[&[&str]] = &[
        &[],
        &["blocksize-preferred=32k"],
        &["blocksize-minimum=512", "blocksize-maximum=1M"],
        &[
            "blocksize-minimum=4k",
            "blocksize-preferred=64k",
            "blocksize-maximum=1M",
            "blocksize-error-policy=error",
        ],
        &["blocksize-minimum=512", "blocksize-error-policy=allow"],
    ];
    for set in sets {
        let mut args = vec!["--filter=blocksize-policy", "file", &img];
        args.extend(*set);
        let out = same_as_nbdkit(&args, &format!("{INFO_AND_MAP} && {}", nbdsh(&dir, "r", REQUESTS)));
        if set.contains(&"blocksize-error-policy=error") {
            assert_eq!(value(&out, "small"), "EINVAL", "{out}");
            assert_eq!(value(&out, "large"), "EINVAL", "{out}");
            assert_eq!(value(&out, "aligned"), "ok", "{out}");
        }
    }
}

#[test]
fn bad_sizes_are_refused() {
    let dir = TempDir::new("bspbad");
    let (img, _) = disk(&dir, "d.img", 68, 1 << 20);
    for bad in [
        "blocksize-minimum=3",
        "blocksize-preferred=256",
        "blocksize-minimum=8k blocksize-preferred=4k",
    ] {
        let mut args = vec!["--filter=blocksize-policy", "file", &img];
        args.extend(bad.split(' '));
        assert_exit1(&run_captive(&args, "true"));
        assert!(!nbdkit_captive(&args, "true").status.success(), "nbdkit accepts {bad}?");
    }
}
