//! The built-in `cacheextents` filter: accepted (KubeVirt CDI's stack still passes it) and
//! a pass-through: data, map and flags as nbdkit's cacheextents filter gives them.

use crate::support::*;

#[test]
fn passes_everything_through_as_nbdkit() {
    let dir = TempDir::new("ce");
    let (img, _) = sparse_image(&dir, "s.img", 4 << 20, &[(0, 4096), (2 << 20, 65536)]);
    // CDI's vddk stack with the file plugin in vddk's place.
    let args = ["--filter=cacheextents", "--filter=retry", "file", &img];
    let map_one_at_a_time = "qemu-img map --output=json -f raw \"$nbd\"";
    same_as_nbdkit(
        &args,
        &format!("{INFO_AND_MAP} && {map_one_at_a_time} && nbdcopy \"$uri\" - | md5sum"),
    );
}
