#!/usr/bin/env bash
# Device memory and speed receiving a large bundle over a lossy link, measured with
# /usr/bin/time -v (docs/measurements.md, "Receive: throughput and memory").
#
#   benches/scripts/receive_2gib.sh [WORKDIR]
#
# 1. nix-build a store path of SIZE_MIB (default 2048) MiB of incompressible bytes: FILES
#    files of AES-128-CTR keystream (openssl), a different key each (not a different IV: CTR
#    streams from IVs 0 and 1 are the same bytes shifted by 16, and chunking dedupes them), so
#    the bytes are the same on every build and no chunk repeats. Built once: `WORKDIR/big` is
#    its GC root, reused by later runs (delete it and run `nix-store --gc` to free the space).
# 2. A device whose chroot store (`local?root=WORKDIR/device`) holds a one-file closure v1;
#    `device init` on it, `ground init` of the mirror with v1.
# 3. `ground pack --level 1 --frames` of the big closure: every data shard plus 15 % parity
#    per group (the first pass at the default link parameters: 1 KiB frames, k = 1000).
# 4. A streaming filter drops DROP_PERMILLE (default 100 = 10 %) of the frames:
#    - DROP_MODE=spread (default): drop shard s of group g when (919 s + 7 g) mod 1000 <
#      DROP_PERMILLE. 919 is prime to 1000, so each group loses exactly 10 % of its first
#      1000 shards and ~10 % of the rest: every group needs FEC decoding, none needs more
#      parity than the first pass carries.
#    - DROP_MODE=random: each frame dropped independently with probability DROP_PERMILLE/1000
#      (seed DROP_SEED). Per group that is Binomial(1150, 0.1): ~1 group in 4000 loses more
#      than its 150 parity shards, so a 2 GiB bundle (2099 groups) may stay incomplete (with
#      seed 1 it completes: at most 148 frames lost in one group).
# 5. `/usr/bin/time -v narlink --quiet device receive --state ST FRAMES.lossy`, then (unless
#    IMPORT=0) `/usr/bin/time -v narlink --quiet device import --state ST`. time -v gives the
#    largest RSS of the process tree (for import that is `nix-store --import`), so each
#    process's VmHWM is also sampled every 0.2 s and reported by name.
# 6. A summary table (also written to WORKDIR/summary.md). Big intermediate files (bundle,
#    frame files, device state and store) are deleted at the end unless KEEP=1.
#
# Environment: SIZE_MIB, FILES (default 8), DROP_PERMILLE, DROP_MODE, DROP_SEED, IMPORT,
# KEEP, NARLINK (a narlink binary to measure, for example an older build; default: build this
# tree into CARGO_TARGET_DIR, default ./target). The binary is copied into WORKDIR so
# concurrent rebuilds do not change it mid-run.
#
# Disk: the big store path (SIZE_MIB) stays; during a run about 5.5x SIZE_MIB more (bundle
# or frames, lossy frames, device redb, device store after import).
# Run time (2 GiB, 2 shared cores): 2.5 min at load ~4, 5 min at load ~8, of which the receive
# is 1-1.7 min; the first run adds the nix-build (~20 s). Results: docs/measurements.md,
# "Receive: throughput and memory".
set -euo pipefail
cd "$(dirname "$0")/../.."
export NIX_REMOTE=local
SIZE_MIB=${SIZE_MIB:-2048}
FILES=${FILES:-8}
DROP_PERMILLE=${DROP_PERMILLE:-100}
DROP_MODE=${DROP_MODE:-spread}
DROP_SEED=${DROP_SEED:-1}
IMPORT=${IMPORT:-1}
KEEP=${KEEP:-0}
WORK="${1:-/tmp/narlink-receive}"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
NIXOPTS=(--option sandbox false --option substituters "")
step() { printf '\n== %s\n' "$*" >&2; }
rm_store() { [ -e "$1" ] && chmod -R u+w "$1" && rm -rf "$1"; return 0; }
# hwm_watch PID OUT: until PID exits, record the peak RSS (VmHWM) of each process below it,
# by command name (time -v reports only the largest of them).
hwm_watch() {
  local root=$1 out=$2
  declare -A peak=()
  while kill -0 "$root" 2>/dev/null; do
    local pids=$root kids=$root
    while kids=$(pgrep -d, -P "$kids" 2>/dev/null); do pids="$pids,$kids"; done
    for p in ${pids//,/ }; do
      local c h
      c=$(cat /proc/$p/comm 2>/dev/null) || continue
      h=$(awk '/^VmHWM:/{print $2}' /proc/$p/status 2>/dev/null) || continue
      [ -n "$h" ] && [ "$h" -gt "${peak[$c]:-0}" ] && peak[$c]=$h
    done
    sleep 0.2
  done
  for c in "${!peak[@]}"; do echo "$c ${peak[$c]}"; done >"$out"
}
start=$(date +%s)

if [ -n "${NARLINK:-}" ]; then
  cp "$NARLINK" "$WORK/narlink"
else
  step "building narlink (release)"
  TARGET=${CARGO_TARGET_DIR:-$PWD/target}
  CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin narlink
  cp "$TARGET/release/narlink" "$WORK/narlink"
fi
NARLINK="$WORK/narlink"

step "nix-build: $SIZE_MIB MiB of incompressible data in $FILES files"
cat >"$WORK/big.nix" <<'NIX'
{ mib, files, tag ? "v1" }:
let
  per = mib / files;
  data = derivation {
    name = "narlink-bench-random-${toString mib}mib";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p $out/data
      i=0
      while [ $i -lt ${toString files} ]; do
        key=$(/usr/bin/printf '6e61726c696e6b2d%016x' $i)
        /usr/bin/openssl enc -aes-128-ctr -nosalt -K $key -iv 0 </dev/zero 2>/dev/null \
          | /usr/bin/head -c ${toString per}M > $out/data/blob-$i
        i=$((i + 1))
      done
    '' ];
  };
  small = derivation {
    name = "narlink-bench-base-${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out && /bin/echo base ${tag} > $out/README" ];
  };
in { inherit data small; }
NIX
BIG=$(nix-build "$WORK/big.nix" -A data --arg mib "$SIZE_MIB" --arg files "$FILES" "${NIXOPTS[@]}" -o "$WORK/big" 2>/dev/null)
V1=$(nix-build "$WORK/big.nix" -A small --arg mib "$SIZE_MIB" --arg files "$FILES" "${NIXOPTS[@]}" -o "$WORK/v1" 2>/dev/null)
echo "big: $BIG ($(du -sh --apparent-size "$BIG" | cut -f1))" >&2
echo "v1:  $V1" >&2

step "device (chroot store holding v1) and mirror"
rm -rf "$WORK/state" "$WORK/mirror" "$WORK"/*.bundle "$WORK"/frames*
rm_store "$WORK/device"
DEVICE="local?root=$WORK/device"
nix-store --export $(nix-store -qR "$V1") | nix-store --store "$DEVICE" --import >/dev/null
SIGN=()
if "$NARLINK" device init --help | grep -q -- --trust; then
  # Signed manifests: the device trusts the ground's key, the ground signs the bundle.
  rm -f "$WORK/ground.sk" "$WORK/ground.pk"
  nix-store --generate-binary-cache-key ground-bench "$WORK/ground.sk" "$WORK/ground.pk"
  "$NARLINK" --quiet device init --state "$WORK/state" --store "$DEVICE" --trust "$WORK/ground.pk" >&2
  SIGN=(--sign-key "$WORK/ground.sk")
else
  "$NARLINK" --quiet device init --state "$WORK/state" --store "$DEVICE" >&2
fi
"$NARLINK" --quiet ground init --mirror "$WORK/mirror" "$V1" >&2

step "ground pack --level 1 --frames (first pass: data + 15% parity)"
/usr/bin/time -v -o "$WORK/pack.time" "$NARLINK" --quiet ground pack --json --mirror "$WORK/mirror" \
  --out "$WORK/big.bundle" --level 1 "${SIGN[@]}" --frames "$WORK/frames" "$BIG" >"$WORK/pack.json"
rm -f "$WORK/big.bundle"   # the frames carry everything the device gets

step "dropping $DROP_PERMILLE/1000 of the frames ($DROP_MODE)"
python3 - "$WORK/frames" "$WORK/frames.lossy" "$DROP_PERMILLE" "$DROP_MODE" "$DROP_SEED" >"$WORK/drop.json" <<'PY'
# Streaming: one frame in memory at a time. Frames are S + 44 bytes (protocol/src/frame.rs):
# S = u16 LE at offset 4, group = u32 LE at 10, shard = u16 LE at 14.
import json, random, struct, sys
src, dst, permille, mode, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rng = random.Random(seed)
kept = dropped = 0
per_group = {}
with open(src, "rb", buffering=1 << 20) as f, open(dst, "wb", buffering=1 << 20) as out:
    head = f.read(40)
    if len(head) < 40 or head[:2] != b"nL":
        sys.exit("not a frame file")
    n = struct.unpack_from("<H", head, 4)[0] + 44
    frame = head + f.read(n - 40)
    while frame:
        if len(frame) != n or frame[:2] != b"nL":
            sys.exit(f"frame {kept + dropped}: bad length or magic")
        g = struct.unpack_from("<I", frame, 10)[0]
        s = struct.unpack_from("<H", frame, 14)[0]
        if mode == "spread":
            drop = (919 * s + 7 * g) % 1000 < permille
        else:
            drop = rng.random() * 1000 < permille
        if drop:
            dropped += 1
            per_group[g] = per_group.get(g, 0) + 1
        else:
            kept += 1
            out.write(frame)
        frame = f.read(n)
lost = sorted(per_group.values())
print(json.dumps({"frame_len": n, "kept": kept, "dropped": dropped,
                  "max_lost_per_group": lost[-1] if lost else 0,
                  "groups": len(per_group)}))
PY
cat "$WORK/drop.json" >&2
rm -f "$WORK/frames"

step "device receive (lossy frames) under /usr/bin/time -v"
set +e
/usr/bin/time -v -o "$WORK/receive.time" "$NARLINK" --quiet device receive --state "$WORK/state" \
  "$WORK/frames.lossy" >"$WORK/receive.out" 2>"$WORK/receive.err" &
pid=$!
hwm_watch $pid "$WORK/receive.hwm"
wait $pid
rc_receive=$?
set -e
cat "$WORK/receive.out" "$WORK/receive.err" >&2
lossy_bytes=$(stat -c %s "$WORK/frames.lossy")
state_bytes=$(du -sb "$WORK/state" | cut -f1)
rm -f "$WORK/frames.lossy"

rc_import=skipped
if [ "$IMPORT" = 1 ] && grep -q "complete, ready to import" "$WORK/receive.out"; then
  step "device import under /usr/bin/time -v"
  set +e
  /usr/bin/time -v -o "$WORK/import.time" "$NARLINK" --quiet device import --state "$WORK/state" \
    >"$WORK/import.out" 2>"$WORK/import.err" &
  pid=$!
  hwm_watch $pid "$WORK/import.hwm"
  wait $pid
  rc_import=$?
  set -e
  cat "$WORK/import.out" "$WORK/import.err" >&2
  nix-store --store "$DEVICE" --verify-path "$BIG" && echo "verify-path on the device: ok" >&2
fi

step "summary"
python3 - "$WORK" "$rc_receive" "$rc_import" "$lossy_bytes" "$state_bytes" "$DROP_MODE" "$DROP_PERMILLE" <<'PY' | tee "$WORK/summary.md"
import json, os, re, sys
work, rc_r, rc_i, lossy, state_bytes, mode, permille = sys.argv[1:8]
def tv(name):
    p = os.path.join(work, name)
    if not os.path.exists(p):
        return None
    t = open(p).read()
    def field(label):
        m = re.search(re.escape(label) + r":\s*(\S+)", t)
        return m.group(1) if m else None
    el = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    secs = 0.0
    for part in el.split(":"):
        secs = secs * 60 + float(part)
    return {"rss_kib": int(field("Maximum resident set size (kbytes)")), "wall": secs,
            "user": float(field("User time (seconds)")), "sys": float(field("System time (seconds)"))}
pack = json.load(open(os.path.join(work, "pack.json")))
drop = json.load(open(os.path.join(work, "drop.json")))
bundle = pack["bundle_bytes"]
rows = [("ground pack --level 1 --frames", tv("pack.time"), pack["frame_bytes"], "frames written"),
        ("device receive (lossy frames)", tv("receive.time"), bundle, "bundle bytes"),
        ("device import", tv("import.time"), pack["nar_bytes_new"], "NAR bytes")]
print(f"bundle {bundle} B ({bundle / 2**30:.2f} GiB), {pack['frames']} frames ({pack['frame_bytes']} B); "
      f"dropped {drop['dropped']} ({100 * drop['dropped'] / pack['frames']:.2f} %, mode {mode}, "
      f"max {drop['max_lost_per_group']} lost in one group), {drop['kept']} frames ({lossy} B) received; "
      f"device state after receive {int(state_bytes) / 2**20:.0f} MiB; receive exit {rc_r}, import exit {rc_i}")
print()
print("| step | peak RSS (MiB) | wall (s) | user (s) | sys (s) | MB/s (10^6 B/s) | of |")
print("|---|---:|---:|---:|---:|---:|---|")
for name, t, n, what in rows:
    if t is None:
        continue
    print(f"| {name} | {t['rss_kib'] / 1024:.1f} | {t['wall']:.1f} | {t['user']:.1f} | {t['sys']:.1f} | "
          f"{n / t['wall'] / 1e6:.1f} | {what} |")
for step in ("receive", "import"):
    p = os.path.join(work, step + ".hwm")
    if os.path.exists(p):
        peaks = [l.split() for l in open(p) if l.strip() and not l.startswith("time ")]
        print(f"\n{step}: peak RSS per process (VmHWM sampled every 0.2 s): " +
              ", ".join(f"{c} {int(k) / 1024:.1f} MiB" for c, k in sorted(peaks)))
PY
grep -q "complete, ready to import" "$WORK/receive.out" && echo "receive: complete, ready to import" || echo "receive: INCOMPLETE"

if [ "$KEEP" != 1 ]; then
  rm -rf "$WORK/state" "$WORK/mirror" "$WORK/narlink"
  rm_store "$WORK/device"
fi
echo "run time: $(( $(date +%s) - start )) s; files in $WORK" >&2
