#!/usr/bin/env bash
# bench/load.sh [CLIENTS [DEPTH [NBDBOX]]]  — CLIENTS connections (default 16), each with
# DEPTH requests in flight (default 8), of random reads and writes (BENCH_RW) for BENCH_FIO_TIME seconds,
# against `memory` and `file` served by nbdbox and by nbdkit side by side; once with small
# requests (4k: many of them) and once with large ones (1M: large request buffers).
#
# For each server it prints the resident memory, thread count and open descriptors (from
# /proc/PID) before the clients come, at their peak while they run, and after they have all
# disconnected, with the IOPS reached. "Before" is taken after one client has filled the
# whole disk, so that the memory plugin's data is in the baseline and what stays after the
# load is only what the connections held. Exits 1 if nbdbox does not come back down: its
# threads and descriptors to the before-figures, its memory to within BENCH_RSS_SLACK_MB of
# them (nbdkit's figures are for comparison only).
#
# Environment: NBDKIT [nbdkit]  BENCH_FIO_TIME [10]  BENCH_BS ["4k 1M"]  BENCH_DISK [64M]
#   BENCH_RW [randrw]: fio's --rw (bench/sweep.sh runs randread)
#   BENCH_RSS_SLACK_MB [32]
#   BENCH_SETTLE [10]: seconds to wait for the figures to come down after the clients end.
set -euo pipefail

CLIENTS=${1:-16}
DEPTH=${2:-8}
NBDBOX=$(command -v "${3:-./target/release/nbdbox}")
NBDKIT=${NBDKIT:-nbdkit}
FIO_TIME=${BENCH_FIO_TIME:-10}
BLOCK_SIZES=${BENCH_BS:-4k 1M}
RW=${BENCH_RW:-randrw}
DISK=${BENCH_DISK:-64M}
RSS_SLACK_KIB=$((${BENCH_RSS_SLACK_MB:-32} * 1024))
SETTLE=${BENCH_SETTLE:-10}
for t in fio awk truncate "$NBDKIT"; do
    command -v "$t" >/dev/null || { echo "load.sh: missing $t" >&2; exit 2; }
done

work=$(mktemp -d)
server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# "RSS_KiB THREADS FDS" of process $1.
measure() {
    local status
    status=$(awk '/^VmRSS:/ {rss = $2} /^Threads:/ {threads = $2} END {print rss, threads}' "/proc/$1/status")
    echo "$status $(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l)"
}

# One server under load: NAME, BLOCK_SIZE, then its command line up to (not including)
# `-U SOCKET`. Prints one result row, and notes a failure if nbdbox did not come back down.
run() {
    local name=$1 bs=$2
    shift 2
    local sock=$work/$name-$bs.sock
    "$@" -f -U "$sock" 2>"$work/$name.log" &
    server=$!
    for _ in $(seq 300); do [[ -S $sock ]] && break; sleep 0.1; done
    [[ -S $sock ]] || { echo "load.sh: $name did not start:" >&2; cat "$work/$name.log" >&2; exit 2; }
    local uri="nbd+unix:///?socket=$sock"

    fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --size="$DISK" \
        --output=/dev/null
    local before peak after
    before=$(measure "$server")

    local samples=$work/$name.samples
    : >"$samples"
    fio --name=load --ioengine=nbd --uri="$uri" --rw="$RW" --bs="$bs" --iodepth="$DEPTH" \
        --numjobs="$CLIENTS" --size="$DISK" --runtime="$FIO_TIME" --time_based --group_reporting \
        --output-format=terse --terse-version=3 --output="$work/$name.fio" &
    local fio=$!
    while kill -0 "$fio" 2>/dev/null; do
        measure "$server" >>"$samples"
        sleep 0.1
    done
    wait "$fio"
    peak=$(awk '{for (i = 1; i <= 3; i++) if ($i > m[i]) m[i] = $i} END {print m[1], m[2], m[3]}' "$samples")

    # Connections end asynchronously after the clients hang up: wait for the threads and
    # descriptors to come back (or for SETTLE seconds).
    local deadline=$((SECONDS + SETTLE))
    after=$(measure "$server")
    while ((SECONDS < deadline)); do
        read -r _ threads fds <<<"$after"
        read -r _ threads0 fds0 <<<"$before"
        ((threads <= threads0 && fds <= fds0)) && break
        sleep 0.2
        after=$(measure "$server")
    done
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=

    # Terse v3: field 8 is the read IOPS, field 49 the write IOPS.
    local iops
    iops=$(awk -F';' '$1 == "3" {print $8 + $49}' "$work/$name.fio")
    read -r rss0 threads0 fds0 <<<"$before"
    read -r rss1 threads1 fds1 <<<"$peak"
    read -r rss2 threads2 fds2 <<<"$after"
    printf '%-14s %4s %8s | %7d %7d %7d | %4d %4d %4d | %4d %4d %4d\n' "$name" "$bs" "$iops" \
        $((rss0 / 1024)) $((rss1 / 1024)) $((rss2 / 1024)) "$threads0" "$threads1" "$threads2" "$fds0" "$fds1" "$fds2"
    if [[ $name == nbdbox* ]]; then
        local why=()
        ((threads2 <= threads0)) || why+=("threads $threads0 -> $threads2")
        ((fds2 <= fds0)) || why+=("fds $fds0 -> $fds2")
        ((rss2 <= rss0 + RSS_SLACK_KIB)) || why+=("RSS $((rss0 / 1024)) -> $((rss2 / 1024)) MiB")
        if ((${#why[@]})); then
            failures+=("$name ($bs) did not come back down: ${why[*]}")
        fi
    fi
}

failures=()
truncate -s "$DISK" "$work/nbdbox.img" "$work/nbdkit.img"
echo "# $CLIENTS clients x queue depth $DEPTH, $RW, ${FIO_TIME} s, disk $DISK"
printf '%-14s %4s %8s | %23s | %14s | %14s\n' "# server" "bs" "IOPS" "RSS MiB before/peak/after" \
    "threads b/p/a" "fds b/p/a"
for bs in $BLOCK_SIZES; do
    run nbdbox-memory "$bs" "$NBDBOX" memory "$DISK"
    run nbdkit-memory "$bs" "$NBDKIT" memory "$DISK"
    run nbdbox-file "$bs" "$NBDBOX" file "$work/nbdbox.img"
    run nbdkit-file "$bs" "$NBDKIT" file "$work/nbdkit.img"
done
for failure in "${failures[@]}"; do
    echo "load.sh: $failure" >&2
done
((${#failures[@]} == 0))
