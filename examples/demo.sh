#!/usr/bin/env bash
# The main job on a real example: build versions 1 and 2 of a small closure with this
# machine's Nix, put v1 on a "device" (a second Nix store under a chroot directory), then ship
# the update v1 -> v2 through narlink and check it arrived whole.
#
#   bash scripts/setup.sh && bash examples/demo.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_REMOTE=local
WORK="${1:-$(mktemp -d /tmp/narlink-demo.XXXXXX)}"
mkdir -p "$WORK"
NIXOPTS=(--option sandbox false --option substituters "")
step() { printf '\n== %s\n' "$*"; }

step "building narlink"
cargo build --release --quiet
NARLINK="${CARGO_TARGET_DIR:-$PWD/target}/release/narlink"

step "building the example closure, versions 1 and 2, with nix-build"
V1=$(nix-build examples/demo.nix --arg version 1 "${NIXOPTS[@]}" -o "$WORK/v1" 2>/dev/null)
V2=$(nix-build examples/demo.nix --arg version 2 "${NIXOPTS[@]}" -o "$WORK/v2" 2>/dev/null)
echo "v1: $V1"; echo "v2: $V2"

step "the device holds v1 (a chroot store at $WORK/device)"
DEVICE="local?root=$WORK/device"
nix-store --export $(nix-store -qR "$V1") | nix-store --store "$DEVICE" --import >/dev/null
nix-store --generate-binary-cache-key ground-1 "$WORK/ground.sk" "$WORK/ground.pk"
"$NARLINK" device init --state "$WORK/device-state" --store "$DEVICE" --trust "$WORK/ground.pk"
# The device's key goes to the ground before launch: the mirror takes only reports it sealed.
"$NARLINK" device identity --state "$WORK/device-state" --export "$WORK/device.key"
"$NARLINK" ground init --mirror "$WORK/mirror" --device-key "$WORK/device.key" "$V1"

step "ground: pack the update to v2"
"$NARLINK" ground pack --mirror "$WORK/mirror" --sign-key "$WORK/ground.sk" --out "$WORK/update.bundle" "$V2"

step "device: receive, import"
"$NARLINK" device receive --state "$WORK/device-state" "$WORK/update.bundle"
"$NARLINK" device import --state "$WORK/device-state"

step "check: nix-store --verify-path on the device, closures equal"
nix-store --store "$DEVICE" --verify-path $(nix-store -qR "$V2") && echo "verify-path: ok"
diff <(nix-store -qR "$V2") <(nix-store --store "$DEVICE" -qR "$V2") && echo "closures equal"

step "device status -> ground ack; packing again sends nothing"
"$NARLINK" device status --state "$WORK/device-state" --out "$WORK/status.bin"
"$NARLINK" ground ack --mirror "$WORK/mirror" "$WORK/status.bin"
"$NARLINK" ground pack --mirror "$WORK/mirror" --sign-key "$WORK/ground.sk" --out "$WORK/again.bundle" "$V2" | head -2
echo; echo "demo done; files in $WORK"
