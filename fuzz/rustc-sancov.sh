#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build: adds libFuzzer's coverage instrumentation (the flags
# cargo-fuzz passes, less its nightly-only sanitizer ones) to the code under test only —
# the nbdbox library and the fuzz targets. Every other crate compiles exactly as in the root
# workspace's release build, so cargo reuses those artifacts from the shared target dir
# instead of rebuilding wasmtime instrumented.
set -euo pipefail
rustc=$1
shift
crate=
previous=
for arg in "$@"; do
    [[ $previous == --crate-name ]] && crate=$arg
    previous=$arg
done
case $crate in
nbdbox | fuzz_codec | fuzz_server)
    exec "$rustc" "$@" \
        -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    ;;
esac
exec "$rustc" "$@"
