//! guestfish as the client, in captive mode: the one-liner users script disk jobs with.
//! The `$nbd` variable takes the `nbd://?socket=` form only guestfish accepts because the
//! command mentions guestfish. The appliance boots under TCG here (`/dev/kvm` is unusable),
//! so this takes 15-30 s. `.ci/run` installs guestfish (tests/guestfish.sh --install-only).

use crate::support::{describe, run_captive_timeout, stdout, tool};
use std::time::Duration;

#[test]
fn guestfish_partitions_formats_and_reads_back_a_file() {
    tool("guestfish");
    let script = "LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg guestfish --format=raw -a $nbd \
                  run : part-disk /dev/sda mbr : mkfs ext4 /dev/sda1 : mount /dev/sda1 / : write /hello hi : cat /hello";
    let out = run_captive_timeout(&["memory", "1G"], script, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "guestfish through nbdbox failed:\n{}",
        describe(&out)
    );
    assert_eq!(stdout(&out).trim(), "hi", "{}", describe(&out));
}
