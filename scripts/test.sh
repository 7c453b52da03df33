#!/usr/bin/env bash
# The test suite: unit, property, corpus-replay and end-to-end tests with real Nix
# (the Debian nix-bin that scripts/setup.sh installs), plus lints.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_REMOTE=local
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --release
nix-instantiate --parse flake.nix >/dev/null && echo "flake.nix parses"
