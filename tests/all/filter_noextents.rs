//! The built-in `noextents` filter: a sparse file looks fully allocated, as with nbdkit's
//! noextents filter.

use crate::support::*;

#[test]
fn the_map_is_all_data_as_nbdkit() {
    let dir = TempDir::new("noext");
    let (img, _) = sparse_image(&dir, "s.img", 4 << 20, &[(1 << 20, 4096)]);
    let out = same_as_nbdkit(&["--filter=noextents", "file", &img], INFO_AND_MAP);
    assert!(out.contains("0     4194304    0  data"), "{out}");
    let plain = assert_success(&run_captive(&["file", &img], "nbdinfo --map \"$uri\""));
    assert!(plain.contains("hole"), "the file is sparse without the filter\n{plain}");
}
