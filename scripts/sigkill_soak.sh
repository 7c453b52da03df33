#!/usr/bin/env bash
# Soak test of crash safety: SIGKILL `narlink device receive` at random instants, thousands of
# times, and stop at the first run that fails to finish. Longer than the test
# link::sigkill_during_receive_and_import (200 kills), and only the receive.
#
#   scripts/sigkill_soak.sh NARLINK_BIN WORKDIR [KILLS=2000] [MAX_DELAY_MS=50]
#
# Setup (once per WORKDIR): a chroot device store holding examples/demo.nix v1, its
# `device init` state (kept as WORKDIR/state0), a mirror, and the v1 -> v3 bundle as 133
# frame files of 512 B (one durable commit each). Each round starts from state0 and runs
# `device receive` up to 25 times, each killed after a random 0..MAX_DELAY_MS ms unless it has
# finished (a receive of these frames takes ~50 ms; most kills land in the open, its repair,
# and the first commits). A run that was not killed, and the round's last run, must succeed.
# On a failure the state before the failing run is kept as WORKDIR/state.prev.
#
# The rest of an update under kills has its own soaks, as tests with a kill count:
#   NARLINK_KILLS=1000 cargo test --release --test it -- link::sigkill --nocapture
#     (receive and import, each killed at random instants, every round verified byte-exact)
#   NARLINK_LANDING_KILLS=1000 cargo test --release --test it -- landing::sigkill --nocapture
#     (the whole process group of `device import --profile --activate`: import, profile
#     switch, activation and rollback; every round lands or rolls back, the report agrees)
set -euo pipefail
export NIX_REMOTE=local
B=$(realpath "$1"); D=$2; want=${3:-2000}; max_ms=${4:-50}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$D/state0" ]; then
  mkdir -p "$D"
  build() {
    nix-build "$root/examples/demo.nix" --arg version "$1" --no-out-link \
      --option sandbox false --option substituters '' 2>/dev/null
  }
  v1=$(build 1); v3=$(build 3)
  nix-store --export $(nix-store -qR "$v1") |
    nix-store --store "local?root=$D/device" --import >/dev/null
  nix-store --generate-binary-cache-key ground-1 "$D/sk" "$D/pk"
  "$B" --quiet device init --state "$D/state0" --store "local?root=$D/device" --trust "$D/pk"
  "$B" --quiet ground init --mirror "$D/mirror" "$v1"
  "$B" --quiet ground pack --mirror "$D/mirror" --sign-key "$D/sk" --out "$D/b" \
    --frames "$D/frames/" --frame-size 512 --group-k 8 --redundancy 10 "$v3"
fi
receive() { "$B" --quiet device receive --state "$D/state" "$D/frames" >/dev/null 2>"$D/err"; }
failed() { echo "FAILED $1 after $kills kills, round $rounds:"; head -5 "$D/err"; exit 1; }
kills=0; rounds=0; start=$SECONDS
while [ "$kills" -lt "$want" ]; do
  rounds=$((rounds + 1))
  rm -rf "$D/state"; cp -a "$D/state0" "$D/state"
  for _ in $(seq 1 25); do
    rm -rf "$D/state.prev"; cp -a "$D/state" "$D/state.prev"
    "$B" --quiet device receive --state "$D/state" "$D/frames" >/dev/null 2>"$D/err" &
    pid=$!
    sleep "$(printf '0.%03d' $((RANDOM % max_ms)))"
    if kill -9 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      kills=$((kills + 1))
    else
      wait "$pid" || failed "(a run not killed)"
    fi
  done
  receive || failed "(the round's last run)"
  [ $((rounds % 50)) = 0 ] && echo "$kills kills, $rounds rounds, $((SECONDS - start)) s"
done
echo "$kills kills over $rounds rounds in $((SECONDS - start)) s: every run that was not killed finished"
