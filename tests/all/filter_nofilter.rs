//! The built-in `nofilter` filter: a pass-through, as nbdkit's.

use crate::support::*;
use std::fs;

#[test]
fn passes_everything_through_as_nbdkit() {
    let dir = TempDir::new("nofilter");
    let (img, _) = sparse_image(&dir, "s.img", 2 << 20, &[(0, 4096), (1 << 20, 8192)]);
    let py = "h.pwrite(b'n' * 5000, 300)\nh.zero(4096, 65536)\nh.flush()\nprint(h.pread(10, 298))\n";
    let script = format!(
        "{} && {INFO_AND_MAP} && nbdcopy \"$uri\" - | md5sum",
        nbdsh(&dir, "w", py)
    );
    let args = |path: &str| vec!["--filter=nofilter".into(), "file".into(), path.to_owned()];
    let [(ours, ours_img), (theirs, theirs_img)] = both_on_copies(&img, args, &script);
    assert_eq!(ours, theirs);
    assert!(fs::read(ours_img).unwrap() == fs::read(theirs_img).unwrap());
}
