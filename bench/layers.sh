#!/usr/bin/env bash
# bench/layers.sh [NBDBOX]  — what the server itself spends per request, and per filter
# layer, nbdbox beside nbdkit with the same command lines.
#
# One connection of 4 KiB random reads at queue depth 16 (fio, nbd engine) for
# BENCH_FIO_TIME seconds against:
#   null             `null 64M`: the floor, the server's own cost with a plugin that does nothing
#   memory           `memory 64M`
#   memory+1         `--filter=nofilter memory 64M`
#   memory+3         `--filter=nofilter` three times
# For each, the server's user and system CPU time per request (from /proc/PID/stat, so
# what the client costs is not counted) and IOPS. Then the cost of one filter layer:
# (user time with 3 filters - user time with none) / 3, in µs. A layer's work is user time;
# system time is the socket, and shifts with how requests batch.
# Each figure is the median of BENCH_REPS runs, interleaved.
#
# Environment: NBDKIT [nbdkit]  BENCH_FIO_TIME [5]  BENCH_REPS [3]  BENCH_IODEPTH [16]
set -euo pipefail

NBDBOX=$(command -v "${1:-./target/release/nbdbox}")
NBDKIT=${NBDKIT:-nbdkit}
FIO_TIME=${BENCH_FIO_TIME:-5}
REPS=${BENCH_REPS:-3}
DEPTH=${BENCH_IODEPTH:-16}
for t in fio awk "$NBDKIT"; do
    command -v "$t" >/dev/null || { echo "layers.sh: missing $t" >&2; exit 2; }
done
TICK=$(getconf CLK_TCK)

work=$(mktemp -d)
server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# One run: prints "USER_US SYS_US IOPS" per request for the server command "$@".
run() {
    local sock=$work/sock
    rm -f "$sock"
    "$@" -f -U "$sock" 2>>"$work/server.log" &
    server=$!
    for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
    [[ -S $sock ]] || { echo "layers.sh: server did not start: $*" >&2; cat "$work/server.log" >&2; exit 2; }
    local before after kib
    before=$(awk '{print $14, $15}' "/proc/$server/stat")
    # Terse v3: field 6 is the KiB read.
    kib=$(fio --name=layers --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw=randread --bs=4k \
        --iodepth="$DEPTH" --numjobs=1 --size=64M --runtime="$FIO_TIME" --time_based \
        --output-format=terse --terse-version=3 | awk -F';' '$1 == "3" {print $6}')
    after=$(awk '{print $14, $15}' "/proc/$server/stat")
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    awk -v b="$before" -v a="$after" -v kib="$kib" -v tick="$TICK" -v t="$FIO_TIME" 'BEGIN {
        split(b, x); split(a, y); n = kib / 4
        printf "%.3f %.3f %.0f\n", (y[1] - x[1]) * 1e6 / tick / n, (y[2] - x[2]) * 1e6 / tick / n, n / t }'
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

stacks=(null memory memory+1 memory+3)
args_for() {
    case $1 in
        null) echo "null 64M" ;;
        memory) echo "memory 64M" ;;
        memory+1) echo "--filter=nofilter memory 64M" ;;
        memory+3) echo "--filter=nofilter --filter=nofilter --filter=nofilter memory 64M" ;;
    esac
}

for ((rep = 1; rep <= REPS; rep++)); do
    for stack in "${stacks[@]}"; do
        read -r -a args <<<"$(args_for "$stack")"
        run "$NBDBOX" "${args[@]}" >>"$work/nbdbox.$stack"
        run "$NBDKIT" "${args[@]}" >>"$work/nbdkit.$stack"
    done
done

printf '# %s reps, %s s each, 4 KiB random reads, qd %s; CPU µs per request (median)\n' "$REPS" "$FIO_TIME" "$DEPTH"
printf '%-10s | %8s %8s %9s | %8s %8s %9s\n' "# stack" "nbdbox" "" "" "nbdkit" "" ""
printf '%-10s | %8s %8s %9s | %8s %8s %9s\n' "#" "user" "sys" "IOPS" "user" "sys" "IOPS"
for stack in "${stacks[@]}"; do
    line=$(printf '%-10s |' "$stack")
    for server in nbdbox nbdkit; do
        f=$work/$server.$stack
        line+=$(printf ' %8s %8s %9s |' "$(cut -d' ' -f1 "$f" | median)" "$(cut -d' ' -f2 "$f" | median)" \
            "$(cut -d' ' -f3 "$f" | median)")
    done
    echo "${line% |}"
done
for server in nbdbox nbdkit; do
    zero=$(cut -d' ' -f1 "$work/$server.memory" | median)
    three=$(cut -d' ' -f1 "$work/$server.memory+3" | median)
    awk -v s="$server" -v a="$zero" -v b="$three" 'BEGIN { printf "%s: one filter layer costs %.2f µs of user CPU per request\n", s, (b - a) / 3 }'
done
