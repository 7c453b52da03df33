#!/usr/bin/env bash
# Peak memory of `narlink device import` on one large real NAR, and which process it is
# (docs/measurements.md, "Device import memory").
#
#   benches/scripts/device_import_rss.sh [WORKDIR]
#
# 1. nix-build two versions of one store path from this machine's own binaries (Debian
#    bookworm with llvm-15, x265 and z3 installed; FILES1/FILES2 name others):
#      v1 `bigbin-1.0`: libLLVM-15.so.1 + libx265.so.199 (133.7 MB),
#      v2 `bigbin-1.1`: libLLVM-15.so.1 + libz3.so.4     (140.6 MB, NAR 134 MiB: more than
#      the largest scenario's, pyarrow's 128 MB).
#    On the device, v2's NAR is rebuilt from 117 MB of chunks read back out of v1 and 23 MB of
#    new, staged payload: both kinds of chunk source, as in the scenarios.
# 2. `ground init` with v1, `ground pack --level 1` of v2 (the level only changes how hard the
#    payload is compressed; the import does the same work), signed.
# 3. The device: a chroot store (`local?root=WORKDIR/device`) holding v1, `device init`,
#    `device receive` of the bundle.
# 4. `/usr/bin/time -f '%e %M' narlink --quiet device import`, as the scenario benchmark
#    measures it: %M is the largest RSS of narlink and of every process it waited for. To say
#    which one peaked, every `nix-store` narlink runs goes through a shim first on PATH that
#    runs it under /usr/bin/time (exact peak per invocation), and narlink's own VmHWM is
#    sampled every 20 ms.
# 5. `nix-store --verify-path` of v2 in the device store.
# 6. A summary (also WORKDIR/summary.txt). Exit status 1 when the peak is over LIMIT_MIB
#    (default 128, issue 4's bound).
#
# Environment: NARLINK (a narlink binary; default: `cargo build --release`, CARGO_TARGET_DIR
# honoured), FILES1, FILES2 (absolute paths of the files of v1 and v2), LIMIT_MIB.
# Disk: the two store paths stay (WORKDIR/v1, WORKDIR/v2 are their GC roots); a run adds
# ~300 MB (device store, state, bundle), deleted at the next run.
# Run time: ~1 min with the paths built (2 shared cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
export NIX_REMOTE=local
WORK="${1:-/tmp/narlink-import-rss}"
LIMIT_MIB=${LIMIT_MIB:-128}
L=/usr/lib/x86_64-linux-gnu
FILES1=${FILES1:-"$L/libLLVM-15.so.1 $L/libx265.so.199"}
FILES2=${FILES2:-"$L/libLLVM-15.so.1 $L/libz3.so.4"}
NIXOPTS=(--option sandbox false --option substituters "")
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
step() { printf '\n== %s\n' "$*" >&2; }
rm_tree() { [ -e "$1" ] && chmod -R u+w "$1" && rm -rf "$1"; return 0; }
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
for f in $FILES1 $FILES2; do [ -f "$f" ] || { echo "$f: not found (set FILES1/FILES2)" >&2; exit 1; }; done

if [ -z "${NARLINK:-}" ]; then
  step "building narlink (release)"
  TARGET=${CARGO_TARGET_DIR:-$PWD/target}
  CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin narlink
  NARLINK="$TARGET/release/narlink"
fi
cp "$NARLINK" "$WORK/narlink"   # a concurrent rebuild does not change it mid-run
NL="$WORK/narlink"

step "nix-build v1 and v2"
build() { # NAME FILES OUT
  nix-build "${NIXOPTS[@]}" -o "$3" -E "derivation {
    name = \"$1\"; system = builtins.currentSystem; builder = \"/bin/sh\";
    args = [ \"-c\" \"/bin/mkdir -p \$out/lib && for f in $2; do /bin/cp -L \$f \$out/lib/; done\" ];
  }" >/dev/null
}
build bigbin-1.0 "$FILES1" "$WORK/v1"
build bigbin-1.1 "$FILES2" "$WORK/v2"
V1=$(readlink "$WORK/v1")
V2=$(readlink "$WORK/v2")
NAR_SIZE=$(nix-store --dump "$V2" | wc -c)
echo "v1 $V1" >&2
echo "v2 $V2 (NAR $NAR_SIZE B)" >&2

step "ground init, pack"
rm_tree "$WORK/run"
R="$WORK/run"
mkdir -p "$R"
nix-store --generate-binary-cache-key rss-ground-1 "$R/sk" "$R/pk"
"$NL" --quiet ground init --mirror "$R/mirror" "$V1" >/dev/null
"$NL" --quiet ground pack --mirror "$R/mirror" --sign-key "$R/sk" --level 1 --out "$R/bundle" "$V2" >/dev/null
echo "bundle $(stat -c %s "$R/bundle") B" >&2

step "device: store holding v1, init, receive"
STORE="local?root=$R/device"
nix-store --export $(nix-store -qR "$V1") | nix-store --store "$STORE" --import >/dev/null
"$NL" --quiet device init --state "$R/state" --store "$STORE" --trust "$R/pk" >/dev/null
"$NL" --quiet device receive --state "$R/state" "$R/bundle" >/dev/null

step "device import (measured)"
REAL_NIX_STORE=$(command -v nix-store)
mkdir -p "$R/shim"
cat >"$R/shim/nix-store" <<EOF
#!/bin/sh
exec /usr/bin/time -a -o "$R/nix-store.rss" -f "%M KiB %e s: %C" "$REAL_NIX_STORE" "\$@"
EOF
chmod +x "$R/shim/nix-store"
: >"$R/nix-store.rss"
PATH="$R/shim:$PATH" /usr/bin/time -o "$R/import.time" -f '%e %M' \
  "$NL" --quiet device import --state "$R/state" >/dev/null &
tpid=$!
nlpid=""
for _ in $(seq 100); do nlpid=$(pgrep -P "$tpid" || true); [ -n "$nlpid" ] && break; sleep 0.01; done
own=0
while [ -n "$nlpid" ] && h=$(awk '/^VmHWM:/{print $2}' "/proc/$nlpid/status" 2>/dev/null) && [ -n "$h" ]; do
  [ "$h" -gt "$own" ] && own=$h
  sleep 0.02
done
wait "$tpid"

step "verify"
nix-store --store "$STORE" --verify-path "$V2"
[ "$(nix-store --store "$STORE" --dump "$V2" | sha256sum)" = "$(nix-store --dump "$V2" | sha256sum)" ]

read -r secs tree <"$R/import.time"
import_line=$(grep -E -- '--(import|serve)' "$R/nix-store.rss" | sort -n | tail -1)
{
  echo "date:           $(date -u +%FT%TZ)   load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "narlink:        $("$NL" --version) ($NARLINK), $(nix-store --version)"
  echo "NAR:            $NAR_SIZE B ($((NAR_SIZE / 1048576)) MiB), bundle $(stat -c %s "$R/bundle") B"
  echo "device import:  $secs s, peak RSS of the tree (time %M) $((tree / 1024)) MiB ($tree KiB)"
  echo "  narlink itself (VmHWM sampled): $((own / 1024)) MiB ($own KiB)"
  echo "  nix-store invocations (time %M each):"
  sed 's/^/    /' "$R/nix-store.rss"
  echo "  the import's nix-store: ${import_line%% KiB*} KiB"
  echo "limit:          $LIMIT_MIB MiB: $([ "$tree" -le $((LIMIT_MIB * 1024)) ] && echo met || echo NOT met)"
} | tee "$WORK/summary.txt"
[ "$tree" -le $((LIMIT_MIB * 1024)) ]
