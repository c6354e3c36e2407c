#!/bin/bash
# KubeVirt CDI's importer without curl (pkg/image/nbdkit.go): the file plugin under CDI's
# start-up line, with a compression filter, then the vddk-style line with file in vddk's
# place. Each is read with qemu-img convert and stopped with os.Interrupt (SIGINT). $1: a
# scratch directory.
set -u
dir=$1
fail() { echo "cdi: $*" >&2; exit 1; }

head -c 2M /dev/urandom > "$dir/disk.img"
truncate -s 4M "$dir/disk.img"
want=$(md5sum < "$dir/disk.img")
xz -k -0 --check=crc32 --block-size=1MiB "$dir/disk.img"

# StartNbdkit: args, filters, nbdkitArgs, plugin, pluginArgs, source; waitForNbd polls the
# pid file every 500 ms for 15 s.
run() {
    local name=$1; shift
    local socket=$dir/$name.sock pidfile=$dir/$name.pid
    nbdkit --foreground --readonly --exit-with-parent -U "$socket" --pidfile "$pidfile" "$@" \
        > "$dir/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 30); do [ -e "$pidfile" ] && break; sleep 0.5; done
    [ -e "$pidfile" ] || fail "$name: timed out waiting for nbdkit to be ready"
    qemu-img convert -f raw -O raw "nbd+unix:///?socket=$socket" "$dir/$name.out" \
        || fail "$name: qemu-img convert"
    [ "$(md5sum < "$dir/$name.out")" = "$want" ] || fail "$name: the import differs"
    kill -INT "$pid"
    wait "$pid"
    echo "$name: imported, nbdkit exited with status $?"
}

# NbdkitFilePlugin with the xz filter: the source is the compressed image.
run xz --filter=xz file "$dir/disk.img.xz"
# NewNbdkitVddk's line with the file plugin: retry and cacheextents, then the plugin's
# arguments with --verbose and -D flags among them.
run vddk-style --filter=retry --filter=cacheextents file --verbose \
    -D nbdkit.backend.controlpath=0 -D nbdkit.backend.datapath=0 "file=$dir/disk.img"
