#!/usr/bin/env bash
# Print the median time and throughput of every criterion benchmark under a target dir as a
# markdown table (docs/measurements.md), from criterion's own estimates.json/benchmark.json.
# Usage: benches/scripts/criterion_medians.sh [GROUP_PREFIX...]   (default: all groups)
# Environment: CARGO_TARGET_DIR (default /work/target-bench).
set -euo pipefail
dir=${CARGO_TARGET_DIR:-/work/target-bench}/criterion
python3 - "$dir" "$@" <<'PY'
import json, os, sys
root, prefixes = sys.argv[1], sys.argv[2:]
rows = []
for d, _, files in os.walk(root):
    if os.path.basename(d) != "new" or "estimates.json" not in files:
        continue
    b = json.load(open(os.path.join(d, "benchmark.json")))
    if prefixes and not any(b["group_id"].startswith(p) for p in prefixes):
        continue
    e = json.load(open(os.path.join(d, "estimates.json")))
    med = e["median"]["point_estimate"]  # ns per iteration
    lo, hi = e["median"]["confidence_interval"]["lower_bound"], e["median"]["confidence_interval"]["upper_bound"]
    tp = (b.get("throughput") or {}).get("Bytes")
    mbs = lambda ns: tp / ns * 1e3 if tp else float("nan")  # bytes/ns * 1e3 = MB/s
    rows.append((b["group_id"], b["function_id"] or "", med, mbs(med), mbs(hi), mbs(lo)))
rows.sort()
print("| group | benchmark | median time | median MB/s | 95% CI of median (MB/s) |")
print("|---|---|---:|---:|---|")
for g, f, med, m, a, z in rows:
    print(f"| {g} | {f} | {med/1e6:.1f} ms | **{m:.0f}** | {a:.0f}–{z:.0f} |")
PY
