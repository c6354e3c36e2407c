#!/bin/bash
# virt-v2v's `-i disk` input with a raw disk (lib/nbdkit.ml run_unix, input/input_disk.ml):
# the probes it makes, then the exact start-up line, a client reading through the socket,
# and the kill that On_exit does. $1: a scratch directory.
set -u
dir=$1
fail() { echo "virt-v2v: $*" >&2; exit 1; }

# Nbdkit.is_installed, Nbdkit.version (from --dump-config), probe_plugin, probe_filter,
# probe_filter_parameter.
nbdkit --version >/dev/null 2>&1 || fail "nbdkit is not installed or not working"
version=$( nbdkit --dump-config | grep '^version=' | cut -d= -f2 )
[[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+) ]] || fail "unexpected version in --dump-config: $version"
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]} release=${BASH_REMATCH[3]}
echo "nbdkit version: $major.$minor.$release"
nbdkit file --version >/dev/null 2>&1 || fail "nbdkit-file-plugin is not installed or not working"
nbdkit null --filter=cow --version >/dev/null 2>&1 || fail "nbdkit-cow-filter is not installed or not working"
nbdkit null --filter=cow --help | grep -sq cow-block-size || fail "cow-block-size not found in --help"

disk=$dir/guest.img
head -c 3M /dev/urandom > "$disk"
truncate -s 8M "$disk"
before=$(md5sum < "$disk")

socket=$dir/in0
pidfile=$dir/nbdkit1.pid
args=(--exit-with-parent --foreground --pidfile "$pidfile" --unix "$socket" --threads 16)
# Reduce verbosity in nbdkit >= 1.17.4.
if [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -ge 18 ]; }; then
    args+=(-D nbdkit.backend.datapath=0)
fi
# virt-v2v -i disk in read-only mode adds the cow filter (not nbdkit -r): writes go to the overlay.
args+=(--filter cow file "file=$disk" cache=none)
LANG=C nbdkit "${args[@]}" &
pid=$!
# wait_for_file pidfile 30
for _ in $(seq 300); do [ -s "$pidfile" ] && break; sleep 0.1; done
[ -s "$pidfile" ] || fail "nbdkit did not start up"
[ "$(cat "$pidfile")" = "$pid" ] || fail "pid file holds $(cat "$pidfile"), not $pid"

# The conversion reads the source; guest changes go to the overlay, never to the disk.
qemu-img convert -f raw -O raw "nbd+unix:///?socket=$socket" "$dir/copy.img" || fail "qemu-img convert"
[ "$(md5sum < "$dir/copy.img")" = "$before" ] || fail "the copy differs from the disk"
qemu-io -f raw -c 'write -P 0x55 0 64k' "nbd+unix:///?socket=$socket" >/dev/null || fail "write through cow"
[ "$(md5sum < "$disk")" = "$before" ] || fail "the cow filter let a write reach the disk"
echo "converted through the socket"

# On_exit.kill pid: SIGTERM, and nbdkit exits.
kill -TERM "$pid"
wait "$pid"
echo "nbdkit exited with status $?"
