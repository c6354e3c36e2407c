//! The built-in `fua` filter: `fuamode=` as nbdkit's fua filter, in the flags and in what
//! reaches the layer below for a FUA write and a flush.

use crate::support::*;

const FUA_WRITE_AND_FLUSH: &str = r#"
try:
    h.pwrite(b"f" * 512, 0, nbd.CMD_FLAG_FUA)
    print("fua ok")
except nbd.Error as e:
    print("fua", e.errno)
h.flush()
"#;

#[test]
fn modes_as_nbdkit() {
    let dir = TempDir::new("fua");
    let (img, _) = disk(&dir, "d.img", 63, 1 << 20);
    // nbdkit 1.32 takes no `fuamode=none` (its default): compare the default instead.
    for mode in [
        None,
        Some("fuamode=emulate"),
        Some("fuamode=native"),
        Some("fuamode=force"),
        Some("fuamode=pass"),
        Some("fuamode=discard"),
    ] {
        let mut args = vec!["--filter=fua", "file", &img];
        args.extend(mode);
        let script = format!("{INFO_AND_MAP} && {}", nbdsh(&dir, "f", FUA_WRITE_AND_FLUSH));
        same_as_nbdkit(&args, &script);
    }
    let ours = assert_success(&run_captive(
        &["--filter=fua", "file", &img, "fuamode=none"],
        INFO_AND_MAP,
    ));
    assert!(ours.contains("can_fua: false"), "{ours}");
}

#[test]
fn the_layer_below_sees_what_the_mode_says() {
    let dir = TempDir::new("fuarec");
    let (img, _) = disk(&dir, "d.img", 64, 1 << 20);
    let below = |mode: &str| -> Vec<String> {
        let o = run_captive(
            &[
                "-v",
                "--filter=fua",
                &filter_arg("recorder"),
                "file",
                &img,
                mode,
                "recorder=below",
            ],
            &nbdsh(&dir, "f", FUA_WRITE_AND_FLUSH),
        );
        assert_success(&o);
        recorded(&stderr(&o))
            .into_iter()
            .filter(|c| c.contains("pwrite") || c.contains("flush"))
            .collect()
    };
    // emulate: the FUA write is a write, then a flush; then the client's flush.
    assert_eq!(
        below("fuamode=emulate"),
        ["below: pwrite count=512 offset=0", "below: flush", "below: flush"]
    );
    // force and discard: the client's flush does nothing below.
    assert_eq!(below("fuamode=force"), ["below: pwrite count=512 offset=0"]);
    assert_eq!(below("fuamode=discard"), ["below: pwrite count=512 offset=0"]);
}
