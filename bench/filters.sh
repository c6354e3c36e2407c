#!/usr/bin/env bash
# bench/filters.sh [NBDBOX]  — the filter stacks integrators use, nbdbox against nbdkit with
# the same command line, in one run:
#   v2v        virt-v2v's input stack: file → retry → blocksize → cow → multi-conn
#              (nbdkit order: --filter=multi-conn --filter=cow --filter=blocksize --filter=retry)
#   cache      --filter=cache file (writeback, cache-on-read)
# For each: a sequential copy of the whole disk out (nbdcopy, MiB/s), qemu-img convert
# writing a disk in through the stack (MiB/s), and 4 KiB random reads and writes at queue
# depth 16 on one connection (fio, IOPS). Prints each figure and the ratio nbdbox / nbdkit.
#
# Environment: NBDKIT [nbdkit]  BENCH_SIZE_MB [512]  BENCH_FIO_TIME [5]  BENCH_IODEPTH [16]
set -euo pipefail

NBDBOX=$(command -v "${1:-./target/release/nbdbox}")
NBDKIT=${NBDKIT:-nbdkit}
SIZE_MB=${BENCH_SIZE_MB:-512}
FIO_TIME=${BENCH_FIO_TIME:-5}
DEPTH=${BENCH_IODEPTH:-16}
for t in fio awk nbdcopy qemu-img "$NBDKIT"; do
    command -v "$t" >/dev/null || { echo "filters.sh: missing $t" >&2; exit 2; }
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# A disk that is half data, half holes, and a source image for the write test.
truncate -s "${SIZE_MB}M" "$WORK/disk.img" "$WORK/src.img"
for f in disk src; do
    for ((i = 0; i < SIZE_MB; i += 2)); do
        dd if=/dev/urandom of="$WORK/$f.img" bs=1M count=1 seek="$i" conv=notrunc status=none
    done
done

V2V=(--filter=multi-conn --filter=cow --filter=blocksize --filter=retry file "$WORK/disk.img")
CACHE=(--filter=cache file "$WORK/disk.img" cache-on-read=true)

# MiB/s of a command run against the server ($uri / $nbd), best of 3.
rate() {
    local server=$1 best=0 t
    shift
    for _ in 1 2 3; do
        t=$("$server" -U - "$@" --run "s=\$(date +%s.%N); $COMMAND; e=\$(date +%s.%N); echo \"\$s \$e\"" |
            awk -v mb="$SIZE_MB" '{ print mb / ($2 - $1) }')
        best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (b > a) ? b : a }')
    done
    echo "$best"
}

# IOPS of 4 KiB random reads and writes (terse v3: field 8 read IOPS, 49 write IOPS).
iops() {
    local server=$1
    shift
    "$server" -U - "$@" --run "fio --name=f --ioengine=nbd --uri=\"\$uri\" --rw=randrw --bs=4k \
--iodepth=$DEPTH --numjobs=1 --runtime=$FIO_TIME --time_based --output-format=terse --terse-version=3 \
| awk -F';' '\$1==\"3\" {print \$8 + \$49}'"
}

row() {
    awk -v n="$1" -v a="$2" -v b="$3" -v u="$4" 'BEGIN { printf "%-34s %10.1f %10.1f %8.2f  %s\n", n, a, b, a / b, u }'
}

printf '%-34s %10s %10s %8s\n' "# stack / measure (${SIZE_MB} MiB)" nbdbox nbdkit ratio
for stack in V2V CACHE; do
    declare -n args=$stack
    COMMAND='nbdcopy "$uri" /dev/null'
    row "$stack copy out" "$(rate "$NBDBOX" "${args[@]}")" "$(rate "$NBDKIT" "${args[@]}")" MiB/s
    COMMAND="qemu-img convert -n -f raw -O raw $WORK/src.img \"\$nbd\""
    row "$stack qemu-img convert in" "$(rate "$NBDBOX" "${args[@]}")" "$(rate "$NBDKIT" "${args[@]}")" MiB/s
    row "$stack 4k randrw qd$DEPTH" "$(iops "$NBDBOX" "${args[@]}")" "$(iops "$NBDKIT" "${args[@]}")" IOPS
    unset -n args
done
