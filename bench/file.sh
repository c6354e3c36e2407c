#!/usr/bin/env bash
# bench/file.sh [NBDBOX]  — the file plugin's reads, where they leave by splice(2).
#
# Reads of 64 KiB and more go from the granted file to the socket through a pipe, with no
# copy in the server (host/src/runtime/spliced.rs); smaller ones are copied. Each line runs
# the same command line under nbdbox and nbdkit (read-only, private Unix socket, captive
# --run, the file on BENCH_TMP so the page cache holds it) and keeps the best of BENCH_REPS:
#   nbdcopy      -r file DATA --run 'nbdcopy "$uri" null:'             (256 KiB requests)
#   qemu-img     -r file DATA --run 'qemu-img convert -n ... $nbd OUT'  (2 MiB requests)
#   fio 1M       -r file DATA --run 'fio --rw=read --bs=1M ...'         (qd BENCH_FIO_IODEPTH)
#   fio 4k       -r file DATA --run 'fio --rw=randread --bs=4k ...'     (copied: below 64 KiB)
# Prints nbdbox, nbdkit and the ratio: > 1 means nbdbox is faster.
#
# Environment: NBDKIT [nbdkit]  BENCH_REPS [3]  BENCH_SIZE [1G]  BENCH_FIO_TIME [5]
#   BENCH_FIO_IODEPTH [16]  BENCH_TMP [/dev/shm]
set -euo pipefail

NBDBOX=${1:-./target/release/nbdbox}
NBDKIT=${NBDKIT:-nbdkit}
REPS=${BENCH_REPS:-3}
SIZE=${BENCH_SIZE:-1G}
FIO_TIME=${BENCH_FIO_TIME:-5}
DEPTH=${BENCH_FIO_IODEPTH:-16}
TMP=${BENCH_TMP:-/dev/shm}
for t in fio nbdcopy qemu-img awk numfmt "$NBDKIT" "$NBDBOX"; do
    command -v "$t" >/dev/null || { echo "file.sh: missing $t" >&2; exit 2; }
done
NBDBOX=$(command -v "$NBDBOX")
BYTES=$(numfmt --from=iec "$SIZE")

DATA=$TMP/nbdbox-file-bench.$$.img
OUT=$TMP/nbdbox-file-bench-out.$$.img
trap 'rm -f "$DATA" "$OUT"' EXIT
head -c "$BYTES" /dev/urandom > "$DATA"
fallocate -l "$BYTES" "$OUT"

# Each script prints one figure: MB/s (10^6 bytes) for the copies, the fio field asked for.
mbps() {   # command run between two clock readings
    echo "t0=\$(date +%s%N); $1 >/dev/null; t1=\$(date +%s%N); echo \$(( $BYTES * 1000 / (t1 - t0) ))"
}
fio_cmd() {   # rw bs field (terse v3: 7 = read KiB/s, 8 = read IOPS)
    echo "fio --name=file --ioengine=nbd --uri=\"\$uri\" --rw=$1 --bs=$2 --iodepth=$DEPTH \
--runtime=$FIO_TIME --time_based --output-format=terse --terse-version=3 | awk -F';' '\$1==\"3\" {print \$$3}'"
}

best() {   # server script -> the highest of REPS runs
    local server=$1 script=$2 v out=""
    for _ in $(seq "$REPS"); do
        v=$("$server" -r -U - file "$DATA" --run "$script")
        if [[ -z $out ]] || awk -v a="$v" -v b="$out" 'BEGIN { exit !(a > b) }'; then
            out=$v
        fi
    done
    echo "$out"
}

row() {   # label unit script
    local ours theirs
    ours=$(best "$NBDBOX" "$3")
    theirs=$(best "$NBDKIT" "$3")
    awk -v l="$1 ($2)" -v a="$ours" -v b="$theirs" 'BEGIN { printf "%-26s %12s %12s %8.2f\n", l, a, b, a / b }'
}

printf '%-26s %12s %12s %8s\n' "# $SIZE file on $TMP" nbdbox nbdkit ratio
row "nbdcopy seqread" "MB/s" "$(mbps 'nbdcopy "$uri" null:')"
row "qemu-img convert" "MB/s" "$(mbps "qemu-img convert -n -f raw -O raw \$nbd $OUT")"
row "fio read 1M" "KiB/s" "$(fio_cmd read 1M 7)"
row "fio randread 4k" "IOPS" "$(fio_cmd randread 4k 8)"
