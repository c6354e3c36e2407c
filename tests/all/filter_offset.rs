//! The built-in `offset` filter: `offset=`/`range=` serve a window of the layer below, with
//! its data, map and writes, as nbdkit's offset filter.

use crate::support::*;
use std::fs;

#[test]
fn window_bytes_and_map_as_nbdkit() {
    let dir = TempDir::new("off");
    let (img, image) = sparse_image(&dir, "s.img", 8 << 20, &[(0, 4096), (1 << 20, 65536), (5 << 20, 8192)]);
    for window in [&["offset=1M", "range=5M"][..], &["offset=100000"], &["range=2M"]] {
        let mut args = vec!["--filter=offset", "file", &img];
        args.extend(window);
        same_as_nbdkit(&args, &format!("{INFO_AND_MAP} && nbdcopy \"$uri\" - | md5sum"));
    }
    // And the bytes are the window's.
    let out = dir.str("out");
    let script = format!("nbdcopy \"$uri\" {}", shell_quote(&out));
    assert_success(&run_captive(
        &["--filter=offset", "file", &img, "offset=1M", "range=5M"],
        &script,
    ));
    assert!(fs::read(&out).unwrap() == image[1 << 20..6 << 20]);
}

#[test]
fn writes_stay_in_the_window() {
    let dir = TempDir::new("offw");
    let (img, data) = disk(&dir, "d.img", 50, 1 << 20);
    let py = "h.pwrite(b'W' * 100, 0)\nh.zero(100, h.get_size() - 100)\nh.flush()\n";
    assert_success(&run_captive(
        &["--filter=offset", "file", &img, "offset=4096", "range=8192"],
        &nbdsh(&dir, "w", py),
    ));
    let mut want = data.clone();
    want[4096..4196].fill(b'W');
    want[12188..12288].fill(0);
    assert!(fs::read(&img).unwrap() == want);
}

#[test]
fn a_window_past_the_end_fails_the_open() {
    let dir = TempDir::new("offbad");
    let (img, _) = disk(&dir, "d.img", 51, 1 << 20);
    for args in [["offset=1M", "range=1"], ["offset=0", "range=2M"]] {
        let mut all = vec!["--filter=offset", "file", &img];
        all.extend(args);
        let (ours, theirs) = both(&all, "nbdinfo --size \"$uri\" >/dev/null 2>&1 || echo REFUSED");
        assert_eq!((ours.trim(), theirs.trim()), ("REFUSED", "REFUSED"), "{args:?}");
    }
}
