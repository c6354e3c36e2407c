//! The built-in `nocache` filter: `cachemode=none|emulate|nop` as nbdkit's nocache filter,
//! in the flags and in what a cache request does.

use crate::support::*;

const CACHE: &str = r#"
try:
    h.cache(65536, 0)
    print("cache ok")
except nbd.Error as e:
    print("cache", e.errno)
"#;

#[test]
fn modes_as_nbdkit() {
    let dir = TempDir::new("nocache");
    let (img, _) = disk(&dir, "d.img", 60, 1 << 20);
    for mode in [
        None,
        Some("cachemode=none"),
        Some("cachemode=emulate"),
        Some("cachemode=nop"),
    ] {
        let mut args = vec!["--filter=nocache", "file", &img];
        args.extend(mode);
        let out = same_as_nbdkit(&args, &format!("{INFO_AND_MAP} && {}", nbdsh(&dir, "c", CACHE)));
        let advertised = mode.is_some_and(|m| m != "cachemode=none");
        assert_eq!(out.contains("can_cache: true"), advertised, "{mode:?}\n{out}");
    }
}
