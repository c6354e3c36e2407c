#!/usr/bin/env bash
# Opt-in end-to-end test with guestfish (libguestfs) as the NBD client, in captive mode:
#
#     tests/guestfish.sh                 # run it (builds target/release/nbdbox if missing)
#     tests/guestfish.sh --install       # first install guestfish (Debian 12, root, ~300 packages)
#     tests/guestfish.sh --install-only  # only install (.ci/run; the suite's guestfish test runs it)
#
# nbdbox serves a 1 GiB memory disk on a private socket and runs guestfish against `$nbd`
# (the word "guestfish" in the command makes `$nbd` the `nbd://?socket=…` form guestfish
# accepts): partition, mkfs ext4, mount, write a file, read it back.  Takes ~15-25 s (the
# libguestfs appliance boots under TCG).  Set NBDBOX to test another binary.
#
# Why --install needs backports: this machine's qemu-utils comes from bookworm-backports, which
# conflicts with bookworm's qemu-system-common, so qemu-system must come from backports too.
# /dev/kvm may be unusable (nested/software KVM), so the appliance is forced onto TCG unless
# LIBGUESTFS_BACKEND_SETTINGS is already set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == --install || "${1:-}" == --install-only ]]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt-get update -qq
    apt-get install -y -qq -t bookworm-backports qemu-system-x86 qemu-system-common qemu-block-extra >/dev/null
    apt-get install -y -qq libguestfs-tools >/dev/null
    [[ "$1" == --install-only ]] && exit 0
    shift
fi

command -v guestfish >/dev/null || {
    echo "guestfish is not installed: run $0 --install (Debian 12) or install libguestfs-tools" >&2
    exit 1
}

nbdbox=${NBDBOX:-target/release/nbdbox}
if [[ -z "${NBDBOX:-}" && ! -x "$nbdbox" ]]; then
    cargo build --release --bin nbdbox
fi

export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}

start=$SECONDS
# shellcheck disable=SC2016 # $nbd is expanded by nbdbox's shell, not this one
status=0
out=$("$nbdbox" -U - memory 1G --run \
    'guestfish --format=raw -a $nbd run : part-disk /dev/sda mbr : mkfs ext4 /dev/sda1 : mount /dev/sda1 / : write /hello hi : cat /hello') ||
    status=$?
if [[ $status -ne 0 || "$out" != "hi" ]]; then
    echo "FAIL: expected exit status 0 and output 'hi', got status $status and:" >&2
    printf '%s\n' "$out" >&2
    exit 1
fi
echo "guestfish: PASS ($((SECONDS - start)) s)"
