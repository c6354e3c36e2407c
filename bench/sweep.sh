#!/usr/bin/env bash
# bench/sweep.sh [NBDBOX]  — the connection sweep: 1, 4, 16, 64 and 256 connections, each
# with 16 random 4 KiB reads in flight, against `memory` and `file` served by nbdbox and by
# nbdkit side by side (bench/load.sh once per count). For each it prints aggregate IOPS and
# the server's resident memory, threads and descriptors before, at the peak and after; it
# fails if nbdbox does not come back down after the clients leave.
#
# Environment: BENCH_CONNECTIONS ["1 4 16 64 256"]  BENCH_IODEPTH [16]  and load.sh's
#   (BENCH_FIO_TIME [10], BENCH_DISK [64M], NBDKIT [nbdkit]).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for connections in ${BENCH_CONNECTIONS:-1 4 16 64 256}; do
    BENCH_RW=randread BENCH_BS=4k "$here/load.sh" "$connections" "${BENCH_IODEPTH:-16}" "${1:-./target/release/nbdbox}"
done
