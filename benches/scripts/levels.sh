#!/usr/bin/env bash
# Bundle bytes and pack time of one update at several zstd levels (`ground pack --level`).
#
#   NARLINK=<binary> benches/scripts/levels.sh OLD_ROOT NEW_ROOT [LEVEL...]
#
# OLD_ROOT is what the device holds (ground init), NEW_ROOT the target; both store paths in the
# local store (e.g. the `old`/`new` links a bench-scenarios run leaves in WORKDIR/<scenario>/).
# Prints a markdown table: level, bundle bytes, payload bytes, pack seconds.
set -euo pipefail
NARLINK="${NARLINK:?set NARLINK to a narlink binary}"
OLD="$1"; NEW="$2"; shift 2
if [ $# -gt 0 ]; then LEVELS=("$@"); else LEVELS=(3 9 15 19 22); fi
export NIX_REMOTE=local
W="$(mktemp -d /tmp/narlink-levels.XXXXXX)"
trap 'rm -rf "$W"' EXIT
# Signed, as every real bundle is (the signature's bytes are counted).
nix-store --generate-binary-cache-key levels-1 "$W/sk" "$W/pk"
echo "| level | bundle B | payload B | pack s |"
echo "|---|---:|---:|---:|"
for L in "${LEVELS[@]}"; do
  rm -rf "$W/mirror"
  "$NARLINK" --quiet ground init --mirror "$W/mirror" "$OLD" >/dev/null
  start=$(date +%s.%N)
  "$NARLINK" --quiet ground pack --mirror "$W/mirror" --sign-key "$W/sk" --level "$L" --json --out "$W/b" "$NEW" > "$W/r.json"
  end=$(date +%s.%N)
  python3 - "$W/r.json" "$L" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {r['bundle_bytes']:,} | {r['bytes_compressed']:,} | {float(sys.argv[4]) - float(sys.argv[3]):.1f} |")
PY
done
