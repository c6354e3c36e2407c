#!/usr/bin/env bash
# fuzz/run.sh [SECONDS]  — build the fuzz targets and run each for SECONDS/2 (default 120 in
# all); exit 1 if either crashed, hung or leaked, printing the input that did it.
#
# Targets (fuzz_targets/): codec (nbdbox::protocol, with round-trip properties) and server
# (whole sessions against `memory 1M` and `--filter=retry --filter=readahead memory 1M`).
# Coverage-guided libFuzzer on the stable toolchain: rustc-sancov.sh instruments nbdbox and
# the targets, libFuzzer's runtime comes from Debian's libclang-rt-14-dev (installed here if
# missing). The build shares the root workspace's target dir and release profile, so after
# `cargo build --release` or `cargo test --release` only nbdbox and the targets compile.
#
# Inputs that find something new go to <target>/fuzz/corpus/TARGET (fuzz/corpus/TARGET holds
# the seeds, kept in the repository; `<target>/release/seeds fuzz/corpus` rewrites them from
# src/bin/seeds.rs); findings to <target>/fuzz/artifacts/TARGET; the run's output to
# <target>/fuzz/TARGET.log.
# Reproduce one with: <target>/release/fuzz-TARGET FILE
#
# Environment: CARGO_TARGET_DIR [<repo>/target]  NBDBOX_LIBFUZZER [Debian's archive]
#   FUZZ_OPTIONS: more libFuzzer options for both targets (-rss_limit_mb=512, -seed=1...)
set -euo pipefail

seconds=${1:-120}
# libFuzzer takes -max_total_time=0 as "no limit".
per_target=$((seconds >= 2 ? seconds / 2 : 1))
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
target=${CARGO_TARGET_DIR:-$root/target}
export NBDBOX_LIBFUZZER=${NBDBOX_LIBFUZZER:-/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a}

if [[ ! -f $NBDBOX_LIBFUZZER ]]; then
    echo "fuzz: installing libclang-rt-14-dev (libFuzzer's runtime)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends libclang-rt-14-dev >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends libclang-rt-14-dev >/dev/null; }
fi

# The root's lock file, so that every dependency resolves to the version the root build
# built (the fuzz package's own dependencies are all the root's too).
cp "$root/Cargo.lock" "$fuzz/Cargo.lock"
started=$SECONDS
RUSTC_WRAPPER="$fuzz/rustc-sancov.sh" CARGO_TARGET_DIR="$target" \
    cargo build --release --manifest-path "$fuzz/Cargo.toml" --bins
echo "fuzz: built in $((SECONDS - started)) s"

failed=0
for name in codec server; do
    corpus=$target/fuzz/corpus/$name
    artifacts=$target/fuzz/artifacts/$name
    log=$target/fuzz/$name.log
    mkdir -p "$corpus" "$artifacts"
    rm -f "$artifacts"/*
    # -timeout: libFuzzer's own per-input alarm, beyond the server target's 10 s session
    # deadline. The targets' stderr (the server's log lines) goes to the log with libFuzzer's.
    read -r -a options <<<"${FUZZ_OPTIONS:-}"
    [[ -f $fuzz/$name.dict ]] && options+=(-dict="$fuzz/$name.dict")
    status=0
    "$target/release/fuzz-$name" "$corpus" "$fuzz/corpus/$name" "${options[@]}" \
        -max_total_time=$per_target -timeout=30 -max_len=16384 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" |
        sed "s/^/fuzz $name: /" || true
    found=$(find "$artifacts" -type f)
    if [[ $status -ne 0 || -n $found ]]; then
        failed=1
        echo "fuzz $name: FAILED (exit $status); the end of $log:"
        tail -n 40 "$log"
        for input in $found; do
            echo "fuzz $name: reproducer $input ($(stat -c %s "$input") bytes):"
            od -A d -t x1 "$input" | head -n 20
            echo "fuzz $name: reproduce with: $target/release/fuzz-$name $input"
        done
    fi
done
exit $failed
