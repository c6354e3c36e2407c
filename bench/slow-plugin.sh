#!/usr/bin/env bash
# bench/slow-plugin.sh [NBDBOX]  — a plugin that waits (1 ms per read, like a network
# round trip) under 4 KiB random reads at queue depth 16 on ONE connection.
#
# nbdbox runs the test-only sleepy.wasm (each read sleeps DELAY ms in host.sleep):
#   lanes      default -t 16: up to 16 instances serve the connection's requests at once
#   one-lane   -t 1: one call at a time, what a single instance per connection gives
# nbdkit runs `--filter=delay null rdelay=DELAY` (its reads also sleep, in parallel).
# Prints IOPS per setup and the ratios lanes/one-lane and lanes/nbdkit.
#
# Environment: NBDKIT [nbdkit]  BENCH_FIO_TIME [5]  BENCH_DELAY_MS [1]  BENCH_IODEPTH [16]
#   BENCH_GUEST_DIR [<dir of NBDBOX>/../wasm-guests/wasm32-wasip2/release]
set -euo pipefail

NBDBOX=$(command -v "${1:-./target/release/nbdbox}")
NBDKIT=${NBDKIT:-nbdkit}
FIO_TIME=${BENCH_FIO_TIME:-5}
DELAY=${BENCH_DELAY_MS:-1}
DEPTH=${BENCH_IODEPTH:-16}
SLEEPY=${BENCH_GUEST_DIR:-$(dirname "$NBDBOX")/../wasm-guests/wasm32-wasip2/release}/sleepy.wasm
for t in fio awk "$NBDKIT"; do
    command -v "$t" >/dev/null || { echo "slow-plugin.sh: missing $t" >&2; exit 2; }
done
[[ -f $SLEEPY ]] || { echo "slow-plugin.sh: no $SLEEPY (set BENCH_GUEST_DIR)" >&2; exit 2; }

# One fio run against the server's $uri; terse v3 field 8 is the read IOPS.
FIO="fio --name=slow --ioengine=nbd --uri=\"\$uri\" --rw=randread --bs=4k --iodepth=$DEPTH \
--numjobs=1 --runtime=$FIO_TIME --time_based --output-format=terse --terse-version=3 \
| awk -F';' '\$1==\"3\" {print \$8}'"

lanes=$("$NBDBOX" -U - "$SLEEPY" 1G delay-ms="$DELAY" --run "$FIO")
one_lane=$("$NBDBOX" -U - -t 1 "$SLEEPY" 1G delay-ms="$DELAY" --run "$FIO")
nbdkit=$("$NBDKIT" -U - --filter=delay null 1G rdelay="${DELAY}ms" --run "$FIO")

printf '%-28s %10s\n' "# setup (${DELAY} ms/read, qd $DEPTH)" "read IOPS"
printf '%-28s %10s\n' "nbdbox sleepy" "$lanes" "nbdbox sleepy -t 1" "$one_lane" "nbdkit delay+null" "$nbdkit"
awk -v a="$lanes" -v b="$one_lane" -v c="$nbdkit" 'BEGIN {
    printf "%-28s %10.2f\n", "ratio lanes / one lane", a / b
    printf "%-28s %10.2f\n", "ratio lanes / nbdkit", a / c }'
