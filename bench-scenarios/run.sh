#!/usr/bin/env bash
# Uplink-bytes scenario benchmark (issue 4, item 4): four real update scenarios built with Nix,
# each shipped through narlink into a device store and measured against its peers in the same
# run. See bench-scenarios/README.md.
#
#   bench-scenarios/run.sh [--quick] [--fetch-only] [--only python,...,compiled-tf] [--skip PEER,...] [WORKDIR]
#
# Environment:
#   SCENARIO_CACHE     where downloads and unpacked trees live (default /work/cache/scenarios)
#   NARLINK            a narlink binary to use instead of building this repo (cargo build --release;
#                      CARGO_TARGET_DIR is honoured)
# Writes WORKDIR/results.json and WORKDIR/results.md and prints the table.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
QUICK=0
FETCH_ONLY=0
ONLY=""
SKIP=""
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --fetch-only) FETCH_ONLY=1 ;;
    --only) ONLY="$2"; shift ;;
    --skip) SKIP="$2"; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) WORK="$1" ;;
  esac
  shift
done
if [ -z "$ONLY" ]; then
  ONLY="python,massrebuild,bigbinary,bigbinary-deb,bigbinary-scipy,config,compiled-scipy,compiled-tf"
  [ $QUICK = 1 ] && ONLY="python,massrebuild,bigbinary,config"   # the other two have no small variant
fi
WORK="${WORK:-$(mktemp -d /tmp/narlink-scenarios.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
CACHE="${SCENARIO_CACHE:-/work/cache/scenarios}"
export NIX_REMOTE=local
NIXOPTS=(--option sandbox false --option substituters "")
START=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - START ))" >&2; }

step "tools"
need=()
for t in nix-store:nix-bin zstd:zstd xdelta3:xdelta3 casync:casync ostree:ostree patchelf:patchelf; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[ -x /usr/bin/time ] || need+=(time)
[ -x /usr/bin/patchelf ] || need+=(patchelf)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c 'import pyfastcdc.cy, zstandard' 2>/dev/null || python3 -m pip install -q pyfastcdc zstandard
command -v detools >/dev/null || python3 -m pip install -q 'detools==0.53.0'   # HDiffPatch's algorithm

step "downloads into $CACHE (once) and unpacked trees"
# Pinned versions: the same cache gives the same store paths. Debian's archive drops superseded
# security builds over time; if one is gone, apt-get download says so.
WHEELS="requests==2.31.0 requests==2.32.3"
[ $QUICK = 1 ] || WHEELS="$WHEELS numpy==1.26.3 numpy==1.26.4 pyarrow==15.0.0 pyarrow==15.0.1 scipy==1.11.3 scipy==1.11.4"
# The large compiled bumps (issue 20): 2.1 GB unpacked.
[ $QUICK = 1 ] || WHEELS="$WHEELS scipy==1.12.0 tensorflow-cpu==2.15.0 tensorflow-cpu==2.15.1"
DEBS="libssl3=3.0.20-1~deb12u2 libssl3=3.0.22-1~deb12u2 openssl=3.0.22-1~deb12u2 coreutils=9.1-1 bash=5.2.15-2+b13 busybox=1:1.35.0-4+deb12u1+b1 zlib1g=1:1.2.13.dfsg-1"
[ $QUICK = 1 ] || DEBS="$DEBS libwebkit2gtk-4.1-0=2.50.6-1~deb12u1 libwebkit2gtk-4.1-0=2.50.6-1~deb12u2"
mkdir -p "$CACHE/wheels" "$CACHE/debs" "$CACHE/trees"
for w in $WHEELS; do
  name="${w%%==*}"; ver="${w#*==}"
  tree="$CACHE/trees/$name-$ver"
  [ -d "$tree" ] && continue
  file="$(echo "$name" | tr - _)-$ver-"   # wheel file names spell "-" as "_"
  f=$(ls "$CACHE/wheels/$file"*.whl 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
      --abi cp311 --platform manylinux2014_x86_64 "$w" -d "$CACHE/wheels"
    f=$(ls "$CACHE/wheels/$file"*.whl | head -1)
  fi
  rm -rf "$tree.tmp"; python3 -m zipfile -e "$f" "$tree.tmp" && mv "$tree.tmp" "$tree"
done
apt_updated=0
for d in $DEBS; do
  name="${d%%=*}"; ver="${d#*=}"; ver="${ver#*:}"
  tree="$CACHE/trees/$name-${ver//\~/_}"
  [ -d "$tree" ] && continue
  f=$(ls "$CACHE/debs/${name}_"*"${ver}_amd64.deb" 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    if [ $apt_updated = 0 ]; then apt-get update -qq || true; apt_updated=1; fi
    (cd "$CACHE/debs" && apt-get download -q "$d" 2>&1 | grep -v '^W:' || true)
    f=$(ls "$CACHE/debs/${name}_"*"${ver}_amd64.deb" | head -1)
  fi
  rm -rf "$tree.tmp"; dpkg-deb -x "$f" "$tree.tmp" && mv "$tree.tmp" "$tree"
done

[ $FETCH_ONLY = 1 ] && { echo "downloads and trees ready in $CACHE" >&2; exit 0; }

step "narlink"
if [ -z "${NARLINK:-}" ]; then
  (cd "$REPO" && cargo build --release --quiet)
  NARLINK="${CARGO_TARGET_DIR:-$REPO/target}/release/narlink"
fi
"$NARLINK" --version

QARGS=()
[ $QUICK = 1 ] && QARGS=(--arg quick true)
QUICK=$QUICK WORK="$WORK" REPO="$REPO" NARLINK="$NARLINK" python3 - <<'PY'
import json, os, subprocess, time
def out(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
e = os.environ
meta = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "quick": e["QUICK"] == "1",
    "command": "bench-scenarios/run.sh" + (" --quick" if e["QUICK"] == "1" else "") + " " + e["WORK"],
    "commit": out("git", "-C", e["REPO"], "rev-parse", "--short", "HEAD"),
    "narlink": out(e["NARLINK"], "--version"), "narlink_binary": e["NARLINK"], "nix": out("nix-store", "--version"),
    "zstd": out("zstd", "--version"), "xdelta3": out("xdelta3", "-V"), "casync": out("casync", "--version"),
    "ostree": [l.strip() for l in subprocess.run(["ostree", "--version"], capture_output=True, text=True).stdout.splitlines() if "Version" in l][0],
    "nproc": os.cpu_count(),
}
open(os.path.join(e["WORK"], "meta.json"), "w").write(json.dumps(meta, indent=1) + "\n")
PY

for s in ${ONLY//,/ }; do
  step "scenario $s: nix-build old and new"
  mkdir -p "$WORK/$s"
  for side in old new; do
    nix-build "$HERE/scenarios.nix" --argstr cache "$CACHE" --argstr scenario "$s" --argstr side "$side" \
      "${QARGS[@]}" "${NIXOPTS[@]}" -o "$WORK/$s/$side" >/dev/null 2>"$WORK/$s.$side.build.log" \
      || { tail -20 "$WORK/$s.$side.build.log" >&2; exit 1; }
  done
  if [ "$s" = python ] && [ $QUICK = 0 ]; then
    "$WORK/$s/new/bin/telemetry-svc" --selftest >&2   # the service really runs against its numpy
  fi
  step "scenario $s: narlink and peers"
  lib=(); [ "$s" = massrebuild ] && lib=(--library libssl3-)
  python3 "$HERE/measure.py" scenario --name "$s" --old "$WORK/$s/old" --new "$WORK/$s/new" \
    --work "$WORK" --narlink "$NARLINK" --skip "$SKIP" "${lib[@]}"
done

step "report"
python3 "$HERE/measure.py" report --work "$WORK" --md "$WORK/results.md"
echo "total wall time: $(( $(date +%s) - START )) s; results in $WORK/results.json" >&2
