#!/usr/bin/env bash
# `ground pack` wall time and bundle bytes of one update for several narlink builds, the builds
# taking turns (run 1 of each, run 2 of each, ...) so that a noisy machine weighs on all alike.
#
#   benches/scripts/pack_time.sh RUNS OLD_ROOT NEW_ROOT BINARY...
#
# OLD_ROOT is what the device holds (ground init, outside the timing), NEW_ROOT the target;
# both store paths in the local store (e.g. the `old`/`new` links a bench-scenarios run leaves
# in WORKDIR/<scenario>/). Prints a markdown table: binary, bundle bytes, median pack seconds,
# every run's seconds.
set -euo pipefail
RUNS="$1"; OLD="$2"; NEW="$3"; shift 3
BINS=("$@")
export NIX_REMOTE=local
W="$(mktemp -d /tmp/narlink-packtime.XXXXXX)"
trap 'rm -rf "$W"' EXIT
# Signed (every build knows --sign-key; newer ones refuse to pack unsigned without --unsigned).
nix-store --generate-binary-cache-key packtime-1 "$W/sk" "$W/pk"
for ((r = 1; r <= RUNS; r++)); do
  for i in "${!BINS[@]}"; do
    rm -rf "$W/mirror"
    "${BINS[$i]}" --quiet ground init --mirror "$W/mirror" "$OLD" >/dev/null
    start=$(date +%s.%N)
    "${BINS[$i]}" --quiet ground pack --mirror "$W/mirror" --sign-key "$W/sk" --json --out "$W/b" "$NEW" > "$W/r.json"
    end=$(date +%s.%N)
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bundle_bytes"])' "$W/r.json" > "$W/bytes.$i"
    python3 -c "print($end - $start)" >> "$W/secs.$i"
  done
done
echo "| binary | bundle B | median pack s | runs s |"
echo "|---|---:|---:|---|"
for i in "${!BINS[@]}"; do
  python3 - "${BINS[$i]}" "$W/bytes.$i" "$W/secs.$i" <<'PY'
import statistics, sys
secs = [float(x) for x in open(sys.argv[3]).read().split()]
print(f"| {sys.argv[1]} | {int(open(sys.argv[2]).read()):,} | {statistics.median(secs):.1f} | {' '.join(f'{s:.1f}' for s in secs)} |")
PY
done
