//! The built-in `nozero` filter: `zeromode=` and `fastzeromode=` as nbdkit's nozero filter,
//! in the flags and in what zero and fast zero requests do; the layer below sees what the
//! mode says (writes of zeroes, zero without may-trim, zero unchanged).

use crate::support::*;

const ZEROES: &str = r#"
for name, flags in [("zero", nbd.CMD_FLAG_NO_HOLE), ("trim", 0), ("fast", nbd.CMD_FLAG_FAST_ZERO)]:
    try:
        h.zero(65536, 65536, flags)
        print(name, "ok")
    except nbd.Error as e:
        print(name, e.errno)
print("read", h.pread(65536, 65536) == bytes(65536))
"#;

#[test]
fn modes_as_nbdkit() {
    let dir = TempDir::new("nozero");
    let (img, _) = disk(&dir, "d.img", 61, 1 << 20);
    let modes: &[&[&str]] = &[
        &[],
        &["zeromode=emulate"],
        &["zeromode=notrim"],
        &["zeromode=plugin"],
        &["zeromode=plugin", "fastzeromode=none"],
        &["zeromode=emulate", "fastzeromode=ignore"],
        &["zeromode=plugin", "fastzeromode=slow"],
    ];
    for mode in modes {
        let args = |path: &str| {
            let mut args: Vec<String> = vec!["--filter=nozero".into(), "file".into(), path.into()];
            args.extend(mode.iter().map(|m| m.to_string()));
            args
        };
        let zeroes = if mode.is_empty() {
            "true".to_owned()
        } else {
            nbdsh(&dir, "z", ZEROES)
        };
        let [(ours, _), (theirs, _)] = both_on_copies(&img, args, &format!("{INFO_AND_MAP} && {zeroes}"));
        assert_eq!(ours, theirs, "{mode:?}");
    }
}

#[test]
fn the_layer_below_sees_what_the_mode_says() {
    let dir = TempDir::new("nozerorec");
    let (img, _) = disk(&dir, "d.img", 62, 1 << 20);
    let below = |mode: &str| -> Vec<String> {
        let o = run_captive(
            &[
                "-v",
                "--filter=nozero",
                &filter_arg("recorder"),
                "file",
                &img,
                mode,
                "recorder=below",
            ],
            &nbdsh(&dir, "z", "h.zero(65536, 65536)\n"),
        );
        assert_success(&o);
        recorded(&stderr(&o))
            .into_iter()
            .filter(|c| c.contains("zero") || c.contains("pwrite"))
            .collect()
    };
    assert_eq!(below("zeromode=emulate"), ["below: pwrite count=65536 offset=65536"]);
    assert_eq!(below("zeromode=plugin"), ["below: zero count=65536 offset=65536"]);
}
