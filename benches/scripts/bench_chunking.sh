#!/usr/bin/env bash
# Run the chunking benchmark the way docs/measurements.md records it: build first, wait for an
# idle machine (benches/scripts/wait_idle.sh), run, then print the medians table and how much CPU
# other processes took meanwhile (the machine has 2 cores and is shared with other builds).
# Usage: benches/scripts/bench_chunking.sh [criterion args, e.g. a filter]
# Environment: IDLE_PCT, MAX_WAIT, REQUIRE_IDLE (see wait_idle.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
cargo bench --bench chunking --no-run 2>/dev/null
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
date -u +"start: %Y-%m-%d %H:%M:%S UTC"
benches/scripts/wait_idle.sh true
b0=$(busy); t0=$(date +%s.%N)
cargo bench --bench chunking -- "$@"
b1=$(busy); t1=$(date +%s.%N)
python3 - "$b0" "$b1" "$t0" "$t1" "$hz" <<'PY'
import sys
b0, b1, t0, t1, hz = map(float, sys.argv[1:])
print(f"wall {t1 - t0:.0f} s; all processes kept {(b1 - b0) / hz / (t1 - t0):.2f} of 2 cores busy on average "
      "(the bench itself: ~1 core in its single-threaded groups, ~2 in two_threads)")
PY
date -u +"end: %Y-%m-%d %H:%M:%S UTC"; uptime
benches/scripts/criterion_medians.sh chunk_hash cut_only blake3_only fs two_threads thread_cpu_time
