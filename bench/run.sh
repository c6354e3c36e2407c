#!/usr/bin/env bash
# bench/run.sh [NBDBOX]  — nbdbox beside nbdkit, same workloads, one run.
#
# Prints one row per figure: nbdbox, nbdkit, ratio.  ratio > 1 means nbdbox
# is faster (times: nbdkit/nbdbox; rates: nbdbox/nbdkit).  Best of
# BENCH_REPS interleaved runs is kept for each figure.
#
# Workloads (memory plugin, private socket, captive --run):
#   startup    `-U - memory 1M --run true`, best of BENCH_STARTUP_N
#              (hyperfine if installed, else a date +%s%N loop)
#   seqwrite   nbdcopy DATA -> $uri   (DATA = BENCH_SIZE random bytes)
#   seqread    nbdcopy $uri -> null:  (after the write)
#   randread   fio --ioengine=nbd, 4 KiB random reads, 1 and 4 jobs,
#              time-based BENCH_FIO_TIME seconds each, iodepth BENCH_FIO_IODEPTH
#   filters    nbdbox only: the same workloads (fio 1 job) through 0, 1 and 3
#              pass-through filters (the test-only passthrough.wasm, which
#              forwards every call unchanged); second table, ratio = N / 0
#
# Environment: NBDKIT [nbdkit]  BENCH_SIZE [1G]  BENCH_REPS [3]
#   BENCH_STARTUP_N [20]  BENCH_FIO_TIME [10]  BENCH_FIO_JOBS ["1 4"]
#   BENCH_FIO_IODEPTH [16]  BENCH_TMP [/dev/shm, else /tmp]  BENCH_FILTERS [yes]
#   BENCH_GUEST_DIR [<dir of NBDBOX>/../wasm-guests/wasm32-wasip2/release]
set -euo pipefail

now_ns() { date +%s%N; }

# ---- inner mode: runs inside a server's --run, prints "key value" lines ----
if [[ "${1:-}" == --inner ]]; then
    uri=$2 data=$3 fio_time=$4 fio_jobs=$5 fio_depth=$6
    t0=$(now_ns); nbdcopy -- "$data" "$uri"; t1=$(now_ns)
    echo "seqwrite_ns $((t1 - t0))"
    t0=$(now_ns); nbdcopy -- "$uri" null:; t1=$(now_ns)
    echo "seqread_ns $((t1 - t0))"
    for j in $fio_jobs; do
        # terse v3: field 8 = read IOPS (one line with --group_reporting)
        iops=$(fio --name=randread --ioengine=nbd --uri="$uri" --rw=randread --bs=4k \
                   --iodepth="$fio_depth" --numjobs="$j" --runtime="$fio_time" --time_based \
                   --group_reporting --output-format=terse --terse-version=3 | awk -F';' '$1=="3" && $3=="randread"{print $8}') || iops=NA
        echo "randread_j${j}_iops $iops"
    done
    exit 0
fi

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
NBDBOX=${1:-./target/release/nbdbox}
NBDKIT=${NBDKIT:-nbdkit}
SIZE=${BENCH_SIZE:-1G}
REPS=${BENCH_REPS:-3}
STARTUP_N=${BENCH_STARTUP_N:-20}
FIO_TIME=${BENCH_FIO_TIME:-10}
FIO_JOBS=${BENCH_FIO_JOBS:-1 4}
FIO_DEPTH=${BENCH_FIO_IODEPTH:-16}
TMP=${BENCH_TMP:-/dev/shm}
FILTERS=${BENCH_FILTERS:-yes}
[[ -d "$TMP" && -w "$TMP" ]] || TMP=/tmp

for t in nbdcopy fio numfmt awk "$NBDKIT" "$NBDBOX"; do
    command -v "$t" >/dev/null || { echo "run.sh: missing $t" >&2; exit 2; }
done
NBDBOX=$(command -v "$NBDBOX")
PASSTHROUGH=${BENCH_GUEST_DIR:-$(dirname "$NBDBOX")/../wasm-guests/wasm32-wasip2/release}/passthrough.wasm
if [[ $FILTERS == yes && ! -f $PASSTHROUGH ]]; then
    echo "run.sh: no $PASSTHROUGH (set BENCH_GUEST_DIR): skipping the filter figures" >&2
    FILTERS=no
fi
BYTES=$(numfmt --from=iec "$SIZE")

WORK=$(mktemp -d "$TMP/nbdbox-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DATA=$WORK/data.img
head -c "$BYTES" /dev/urandom > "$DATA"
RES=$WORK/results    # lines: server key value
: > "$RES"

server_cmd() { if [[ $1 == nbdbox ]]; then echo "$NBDBOX"; else echo "$NBDKIT"; fi; }

startup() {   # server -> best wall time in ms
    local s; s=$(server_cmd "$1")
    if command -v hyperfine >/dev/null; then
        hyperfine -N --warmup 2 --runs "$STARTUP_N" --export-json "$WORK/hf.json" \
            "$s -U - memory 1M --run true" >/dev/null 2>&1 || { echo NA; return; }
        grep -o '"min": *[0-9.e+-]*' "$WORK/hf.json" | head -1 | awk '{printf "%.2f", $2 * 1000}'
    else
        local i t0 t1 best=
        for ((i = 0; i < STARTUP_N; i++)); do
            t0=$(now_ns)
            "$s" -U - memory 1M --run true >/dev/null 2>&1 || { echo NA; return; }
            t1=$(now_ns)
            if [[ -z $best || $((t1 - t0)) -lt $best ]]; then best=$((t1 - t0)); fi
        done
        awk -v n="$best" 'BEGIN{printf "%.2f", n / 1e6}'
    fi
}

heavy() {   # label fio-jobs server-command [options...] -> appends results
    local label=$1 jobs=$2 out; shift 2
    local run; run="$(printf '%q' "$SELF") --inner \"\$uri\" $(printf '%q' "$DATA") $FIO_TIME $(printf '%q' "$jobs") $FIO_DEPTH"
    if out=$(timeout 900 "$@" -U - memory "$SIZE" --run "$run" 2>"$WORK/$label.err"); then
        while read -r k v; do
            [[ -n $v ]] || continue
            case $k in
                *_ns) echo "$label ${k%_ns}_MBps $(awk -v b="$BYTES" -v n="$v" 'BEGIN{printf "%.1f", b / (n / 1e9) / 1e6}')" ;;
                *) echo "$label $k $v" ;;
            esac
        done <<<"$out" >> "$RES"
    else
        echo "# $label failed the heavy workload (see below)" >&2
        tail -5 "$WORK/$label.err" >&2 || true
    fi
}

for ((r = 1; r <= REPS; r++)); do
    if (( r % 2 )); then order="nbdbox nbdkit"; else order="nbdkit nbdbox"; fi
    for s in $order; do
        echo "# rep $r/$REPS: $s" >&2
        echo "$s startup_ms $(startup "$s")" >> "$RES"
        heavy "$s" "$FIO_JOBS" "$(server_cmd "$s")"
    done
    if [[ $FILTERS == yes ]]; then
        if (( r % 2 )); then order="0 1 3"; else order="3 1 0"; fi
        for n in $order; do
            echo "# rep $r/$REPS: nbdbox with $n filter(s)" >&2
            fl=(); for ((i = 0; i < n; i++)); do fl+=("--filter=$PASSTHROUGH"); done
            heavy "f$n" 1 "$NBDBOX" "${fl[@]}"
        done
    fi
done

best() {   # server key lo|hi
    awk -v s="$1" -v k="$2" -v d="$3" '$1==s && $2==k && $3!="NA" && $3!="" {
        v=$3+0; if (!n || (d=="lo" ? v<b : v>b)) b=v; n++ }
        END{ if (n) print b; else print "NA" }' "$RES"
}

printf '%-24s %12s %12s %8s\n' "# figure (best of $REPS)" nbdbox nbdkit ratio
row() {   # key lo|hi
    local a b ratio=NA
    a=$(best nbdbox "$1" "$2"); b=$(best nbdkit "$1" "$2")
    if [[ $a != NA && $b != NA ]]; then
        ratio=$(awk -v a="$a" -v b="$b" -v d="$2" 'BEGIN{ if (a<=0||b<=0) print "NA";
            else printf "%.3f", (d=="lo" ? b/a : a/b) }')
    fi
    printf '%-24s %12s %12s %8s\n' "$1" "$a" "$b" "$ratio"
}
row startup_ms lo
row seqwrite_MBps hi
row seqread_MBps hi
for j in $FIO_JOBS; do row "randread_j${j}_iops" hi; done
echo "# size=$SIZE startup_n=$STARTUP_N fio: ${FIO_TIME}s iodepth=$FIO_DEPTH; MB = 10^6 bytes; ratio > 1: nbdbox faster"

[[ $FILTERS == yes ]] || exit 0
printf '\n%-24s %12s %12s %12s %8s %8s\n' "# filters (best of $REPS)" 0 1 3 "1:0" "3:0"
frow() {   # key (rates only)
    local f0 f1 f3
    f0=$(best f0 "$1" hi); f1=$(best f1 "$1" hi); f3=$(best f3 "$1" hi)
    printf '%-24s %12s %12s %12s %8s %8s\n' "$1" "$f0" "$f1" "$f3" \
        "$(awk -v a="$f1" -v b="$f0" 'BEGIN{ if (a=="NA"||b=="NA"||b<=0) print "NA"; else printf "%.3f", a/b }')" \
        "$(awk -v a="$f3" -v b="$f0" 'BEGIN{ if (a=="NA"||b=="NA"||b<=0) print "NA"; else printf "%.3f", a/b }')"
}
frow seqwrite_MBps
frow seqread_MBps
frow randread_j1_iops
echo "# nbdbox through N x passthrough.wasm; ratio = rate with N filters / rate with none"
