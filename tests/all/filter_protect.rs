//! The built-in `protect` filter: writes that would change a protected range fail with
//! EPERM, writes that leave it as it is pass; `~` protects the complement. Against nbdkit's
//! protect filter, request by request and in the bytes left.

use crate::support::*;
use std::fs;

const ATTEMPTS: &str = r#"
def attempt(name, f):
    try:
        f()
        print(name, "ok")
    except nbd.Error as e:
        print(name, e.errno)
same = h.pread(1024, 0)
attempt("change", lambda: h.pwrite(b"x" * 10, 100))
attempt("same", lambda: h.pwrite(same, 0))
attempt("outside", lambda: h.pwrite(b"y" * 100, 8192))
attempt("across", lambda: h.pwrite(b"z" * 2000, 500))
attempt("zero", lambda: h.zero(512, 0))
attempt("trim", lambda: h.trim(4096, 65536))
attempt("zero-hole", lambda: h.zero(4096, 1048576))
"#;

#[test]
fn requests_and_bytes_as_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("protect");
    for ranges in [
        &["protect=0-1023"][..],
        &["protect=~8192-16383"],
        &["protect=0x0-0x1bd", "protect=65536-"],
    ] {
        let (ours_img, data) = sparse_image(&dir, "ours.img", 2 << 20, &[(0, 16384), (65536, 8192)]);
        let theirs_img = dir.str("theirs.img");
        fs::write(&theirs_img, &data).unwrap();
        let run = |img: &str, nbdkit: bool| {
            let mut args = vec!["--filter=protect", "file", img];
            args.extend(ranges);
            let script = nbdsh(&dir, "p", ATTEMPTS);
            assert_success(&if nbdkit {
                nbdkit_captive(&args, &script)
            } else {
                run_captive(&args, &script)
            })
        };
        let ours = run(&ours_img, false);
        assert_eq!(ours, run(&theirs_img, true), "{ranges:?}");
        assert!(ours.contains("EPERM") && ours.contains(" ok"), "{ranges:?}\n{ours}");
        assert!(
            fs::read(&ours_img).unwrap() == fs::read(&theirs_img).unwrap(),
            "{ranges:?}: bytes left"
        );
    }
}
