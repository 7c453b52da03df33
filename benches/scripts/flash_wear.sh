#!/usr/bin/env bash
# Flash wear of the device: bytes written to storage per byte received (intake) and per byte
# imported, from the kernel's per-process I/O accounting (GNU time's %O: 512-byte blocks the
# process made the kernel write, its children included).
#
#   benches/scripts/flash_wear.sh [WORKDIR]
#
# A store path of SIZE_MIB (default 64) MiB of random bytes is packed (--level 1) and cut
# into frames at the default link parameters; a device holding one small path receives them
# (`device receive`, one pass, no loss), then imports (`device import`). Reported:
# written / frame bytes for the receive, written / NAR bytes for the import. With
# DROP_PERCENT=P each frame is lost on the way with probability P% (fixed seed; the groups
# then decode with parity, and the data shards that did not arrive are written when they are
# rebuilt; the first pass carries 15% parity). WORKDIR must be
# on a real file system (tmpfs writes are not counted). NARLINK: the binary to measure
# (default: this tree's release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
export NIX_REMOTE=local
SIZE_MIB=${SIZE_MIB:-64}
W=${1:-$(mktemp -d /var/tmp/narlink-wear.XXXXXX)}
mkdir -p "$W"
if [ -z "${NARLINK:-}" ]; then
  cargo build --release --quiet
  NARLINK="${CARGO_TARGET_DIR:-$PWD/target}/release/narlink"
fi
nixopts=(--option sandbox false --option substituters '')
big=$(nix-build --no-out-link "${nixopts[@]}" -E "derivation {
  name = \"wear-${SIZE_MIB}m\"; system = builtins.currentSystem; builder = \"/bin/sh\";
  args = [ \"-c\" \"/bin/mkdir \$out && /usr/bin/head -c ${SIZE_MIB}M /dev/urandom > \$out/blob\" ];
}" 2>/dev/null)
small=$(nix-build --no-out-link "${nixopts[@]}" -E 'derivation {
  name = "wear-base"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo base > $out" ];
}' 2>/dev/null)
rm -rf "$W/device" "$W/state" "$W/mirror" "$W/frames" "$W/b"
nix-store --export "$small" | nix-store --store "local?root=$W/device" --import >/dev/null
nix-store --generate-binary-cache-key wear-1 "$W/sk" "$W/pk" 2>/dev/null
"$NARLINK" --quiet device init --state "$W/state" --store "local?root=$W/device" --trust "$W/pk" >/dev/null
"$NARLINK" --quiet ground init --mirror "$W/mirror" "$small" >/dev/null
"$NARLINK" --quiet ground pack --mirror "$W/mirror" --sign-key "$W/sk" --level 1 \
  --out "$W/b" --frames "$W/frames" "$big" >/dev/null
if [ -n "${DROP_PERCENT:-}" ]; then
  # Frames are 1068 bytes at the default link parameters.
  python3 - "$W/frames" "$DROP_PERCENT" 1068 <<'PY'
import random, sys
path, percent, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
rng = random.Random(1)
kept = [data[i:i + size] for i in range(0, len(data), size) if rng.random() * 100 >= percent]
open(path, "wb").write(b"".join(kept))
PY
fi
sync
frames=$(stat -c %s "$W/frames")
nar=$(nix-store -q --size "$big")
/usr/bin/time -f %O -o "$W/recv.o" "$NARLINK" --quiet device receive --state "$W/state" "$W/frames" >/dev/null
/usr/bin/time -f %O -o "$W/imp.o" "$NARLINK" --quiet device import --state "$W/state" >/dev/null
recv=$(( $(tail -1 "$W/recv.o") * 512 )); imp=$(( $(tail -1 "$W/imp.o") * 512 ))
state=$(stat -c %s "$W/state/device.redb")
python3 - "$frames" "$recv" "$nar" "$imp" "$state" <<'PY'
import sys
frames, recv, nar, imp, state = map(int, sys.argv[1:])
print(f"receive: {recv:,} B written for {frames:,} B of frames: {recv/frames:.2f}x")
print(f"import:  {imp:,} B written for {nar:,} B of NAR: {imp/nar:.2f}x")
print(f"state database after import: {state:,} B")
PY
