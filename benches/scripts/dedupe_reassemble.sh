#!/usr/bin/env bash
# Run the dedupe/reassembly benchmark the way docs/measurements.md records it: build the input
# store path (benches/nix/dedupe-input.nix: ~MIB MiB of real host files referencing the
# scenario packages in /nix/store, or whatever DEPS names), build the bench, wait for an idle
# machine (wait_idle.sh), run, print how busy the machine was and the medians table.
# Usage: benches/scripts/dedupe_reassemble.sh [criterion args, e.g. a filter]
# Environment: MIB (default 256), DEPS (space-separated store paths the input references; default:
# the numpy, scipy, pyarrow and webkit paths and the references of a massrebuild profile left in
# /nix/store by the scenario benchmark, those that exist), NARLINK_BENCH_PATH (skip the build and
# use this path), CARGO_TARGET_DIR (default /work/target-bench), IDLE_PCT, MAX_WAIT, REQUIRE_IDLE.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
export NIX_REMOTE=${NIX_REMOTE:-local}
if [[ -z ${NARLINK_BENCH_PATH:-} ]]; then
  if [[ -z ${DEPS:-} ]]; then
    shopt -s nullglob
    DEPS="$(echo /nix/store/*-python3.11-numpy-1.26.4 /nix/store/*-python3.11-scipy-1.11.4 \
      /nix/store/*-python3.11-pyarrow-15.0.1 /nix/store/*-libwebkit2gtk-4.1-2.50.6-deb12u2)"
    for p in /nix/store/*-profile-massrebuild; do
      if [[ $(nix-store -q --references "$p" | wc -l) -gt 30 ]]; then
        DEPS="$DEPS $(nix-store -q --references "$p" | tr '\n' ' ')"
        break
      fi
    done
  fi
  list=$(for d in $DEPS; do printf '"%s" ' "$d"; done)
  NARLINK_BENCH_PATH=$(nix-build benches/nix/dedupe-input.nix --no-out-link \
    --option sandbox false --option substituters "" \
    --arg deps "[ $list ]" --arg mib "${MIB:-256}")
fi
export NARLINK_BENCH_PATH
echo "input: $NARLINK_BENCH_PATH ($(nix-store -q --size "$NARLINK_BENCH_PATH") NAR bytes, $(nix-store -q --references "$NARLINK_BENCH_PATH" | wc -l) references)"
cargo bench --bench dedupe_reassemble --no-run 2>/dev/null
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
date -u +"start: %Y-%m-%d %H:%M:%S UTC"; git log -1 --format='commit: %H'
benches/scripts/wait_idle.sh true
b0=$(busy); t0=$(date +%s.%N)
cargo bench --bench dedupe_reassemble -- "$@"
b1=$(busy); t1=$(date +%s.%N)
python3 - "$b0" "$b1" "$t0" "$t1" "$hz" <<'PY'
import sys
b0, b1, t0, t1, hz = map(float, sys.argv[1:])
print(f"wall {t1 - t0:.0f} s; all processes kept {(b1 - b0) / hz / (t1 - t0):.2f} of 2 cores busy on average "
      "(the bench itself: ~1 core)")
PY
date -u +"end: %Y-%m-%d %H:%M:%S UTC"; uptime
benches/scripts/criterion_medians.sh ground_dedupe device_reassemble dedupe_reassemble_thread_cpu
