#!/usr/bin/env bash
# bench/synthetic.sh [NBDBOX]  — the synthetic plugins as the floor of the host's costs.
#
# null and pattern do (next to) nothing per request, so what a client measures against them
# is the server's own cost: reading the request, the calls through the layers into the
# component and back, writing the reply. Each line runs the same command line under nbdbox
# and nbdkit (private Unix socket, captive --run) and keeps the best of BENCH_REPS runs:
#   null randread    -U - null 1G     --run 'fio --ioengine=nbd ... --rw=randread --bs=4k'
#                    (BENCH_FIO_JOBS jobs, iodepth BENCH_FIO_IODEPTH, BENCH_FIO_TIME s)
#   null seqread     -U - null 1G     --run 'fio ... --rw=read --bs=1M'
#   pattern copy     -U - pattern 1G  --run 'nbdcopy "$uri" null:'   (seconds)
# Prints nbdbox, nbdkit and the ratio: > 1 means nbdbox is faster (rates nbdbox/nbdkit,
# times nbdkit/nbdbox).
#
# Environment: NBDKIT [nbdkit]  BENCH_REPS [3]  BENCH_FIO_TIME [5]  BENCH_FIO_JOBS [1]
#   BENCH_FIO_IODEPTH [16]  BENCH_SIZE [1G]
set -euo pipefail

NBDBOX=${1:-./target/release/nbdbox}
NBDKIT=${NBDKIT:-nbdkit}
REPS=${BENCH_REPS:-3}
FIO_TIME=${BENCH_FIO_TIME:-5}
FIO_JOBS=${BENCH_FIO_JOBS:-1}
DEPTH=${BENCH_FIO_IODEPTH:-16}
SIZE=${BENCH_SIZE:-1G}
for t in fio nbdcopy awk "$NBDKIT" "$NBDBOX"; do
    command -v "$t" >/dev/null || { echo "synthetic.sh: missing $t" >&2; exit 2; }
done
NBDBOX=$(command -v "$NBDBOX")

# One fio run against the server's $uri; terse v3 field 8 is read IOPS, field 7 read KiB/s.
fio_cmd() {   # rw bs field
    echo "fio --name=synthetic --ioengine=nbd --uri=\"\$uri\" --rw=$1 --bs=$2 --iodepth=$DEPTH \
--numjobs=$FIO_JOBS --runtime=$FIO_TIME --time_based --group_reporting --output-format=terse \
--terse-version=3 | awk -F';' '\$1==\"3\" {print \$$3}'"
}
COPY='t0=$(date +%s%N); nbdcopy "$uri" null:; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 ))'

best() {   # max|min server plugin script -> the best of REPS runs
    local pick=$1 server=$2 plugin=$3 script=$4 v out=""
    for _ in $(seq "$REPS"); do
        v=$("$server" -U - "$plugin" "$SIZE" --run "$script")
        if [[ -z $out ]] || awk -v a="$v" -v b="$out" -v p="$pick" \
            'BEGIN { exit !((p == "max" && a > b) || (p == "min" && a < b)) }'; then
            out=$v
        fi
    done
    echo "$out"
}

row() {   # label unit pick plugin script
    local label=$1 unit=$2 pick=$3 plugin=$4 script=$5 ours theirs
    ours=$(best "$pick" "$NBDBOX" "$plugin" "$script")
    theirs=$(best "$pick" "$NBDKIT" "$plugin" "$script")
    awk -v l="$label" -v u="$unit" -v a="$ours" -v b="$theirs" -v p="$pick" 'BEGIN {
        r = (p == "max") ? a / b : b / a
        printf "%-26s %12s %12s %8.2f\n", l " (" u ")", a, b, r }'
}

printf '%-26s %12s %12s %8s\n' "# $SIZE, $FIO_JOBS job(s), qd $DEPTH" nbdbox nbdkit ratio
row "null randread 4k" "IOPS" max null "$(fio_cmd randread 4k 8)"
row "null seqread 1M" "KiB/s" max null "$(fio_cmd read 1M 7)"
row "pattern nbdcopy" "us" min pattern "$COPY"
