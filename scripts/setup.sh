#!/usr/bin/env bash
# Install what narlink's demo, tests and benchmarks need on a fresh Debian machine:
# Debian's Nix (nix-bin), zstd and GNU time (the import memory test). Idempotent; run as root (or with sudo available).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v nix-store >/dev/null || need+=(nix-bin)
command -v zstd >/dev/null || need+=(zstd)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }
echo "setup: $(nix-store --version), $(cargo --version)"
