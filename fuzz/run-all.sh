#!/usr/bin/env bash
# Fuzz every target in turn for MINUTES minutes each (default 1), starting from the committed
# seeds. New inputs go to fuzz/corpus/<target>/ and crashes to fuzz/artifacts/<target>/ (both
# git-ignored); the full libFuzzer log of each target to fuzz/artifacts/logs/<target>.log.
# Replay corpus and crashes with `cargo test --test fuzz_corpus` from the repository root.
#
#   fuzz/run-all.sh [MINUTES] [extra libFuzzer flags, e.g. -jobs=2 -workers=2]
#
# TARGETS="frame status" fuzz/run-all.sh 5   runs only those. Exits 1 if any target failed.
set -uo pipefail
cd "$(dirname "$0")"
MINUTES="${1:-1}"
shift || true
TARGETS="${TARGETS:-$(cargo +nightly fuzz list)}"
cargo +nightly fuzz build || exit 1
mkdir -p artifacts/logs
failed=()
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    log="artifacts/logs/$t.log"
    echo "== $t: $MINUTES min (log: fuzz/$log)"
    # libFuzzer writes new inputs to the first corpus directory: seeds/ stays as committed.
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time=$((MINUTES * 60)) -rss_limit_mb=2048 -print_final_stats=1 "$@" \
        >"$log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log"
    else
        failed+=("$t")
        grep -E -A3 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -20
    fi
done
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (reproducers in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "all targets ran $MINUTES min without a failure"
