#!/usr/bin/env bash
# Chunk-size study (docs/measurements.md, "Chunk size").
#
# Downloads real version pairs (wheels from PyPI with pip, Debian packages with apt-get download)
# into $CACHE (default /work/cache/chunk-study, never in git), unpacks each into a tree, and runs
# the `chunk_params` bench (benches/chunk_params.rs), which chunks the NAR of every old and new
# tree under several FastCDC parameter sets and prints a markdown table of what the new version
# would cost: zstd -19'd bytes of chunks the old version lacks + 36 B of manifest per chunk.
#
# Usage: benches/scripts/chunk_params.sh [extra cargo args]
# Environment: CACHE, CARGO_TARGET_DIR (default /work/target-bench), NARLINK_PARAMS,
#   NARLINK_ZSTD_LEVEL, NARLINK_BASELINE (default 1) — see benches/chunk_params.rs.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-/work/cache/chunk-study}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
export NARLINK_BASELINE=${NARLINK_BASELINE:-1}
mkdir -p "$CACHE/wheels" "$CACHE/debs" "$CACHE/trees"

# name  kind  spec-old  spec-new
PAIRS=(
  "requests wheel requests==2.31.0 requests==2.32.0"
  "numpy wheel numpy==1.26.3 numpy==1.26.4"
  "pandas wheel pandas==2.2.0 pandas==2.2.1"
  "libpython3.11-stdlib deb libpython3.11-stdlib=3.11.2-6+deb12u8 libpython3.11-stdlib=3.11.2-6+deb12u9"
  "libssl3 deb libssl3=3.0.20-1~deb12u2 libssl3=3.0.22-1~deb12u2"
  "libc6 deb libc6=2.36-9+deb12u7 libc6=2.36-9+deb12u14"
  "git deb git=1:2.39.5-0+deb12u2 git=1:2.39.5-0+deb12u3"
  "postgresql-15 deb postgresql-15=15.18-0+deb12u1 postgresql-15=15.20-0+deb12u1"
)

# Print the unpacked tree of one package version, fetching and unpacking it if needed.
tree_of() {
  local kind=$1 spec=$2 dir file
  dir="$CACHE/trees/$(printf %s "$spec" | tr '=:~+' '-___')"
  if [[ ! -d $dir ]]; then
    case $kind in
      wheel)
        local name=${spec%%==*} ver=${spec##*==}
        file=$(ls "$CACHE"/wheels/"${name}"-"${ver}"-*.whl 2>/dev/null | head -1 || true)
        if [[ -z $file ]]; then
          pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
            --platform manylinux2014_x86_64 -d "$CACHE/wheels" "$spec" >&2
          file=$(ls "$CACHE"/wheels/"${name}"-"${ver}"-*.whl | head -1)
        fi
        mkdir -p "$dir.tmp" && python3 -m zipfile -e "$file" "$dir.tmp" ;;
      deb)
        local name=${spec%%=*} ver=${spec#*=}
        file=$(ls "$CACHE"/debs/"${name}"_*"${ver#*:}"_*.deb 2>/dev/null | head -1 || true)
        if [[ -z $file ]]; then
          (cd "$CACHE/debs" && apt-get download "$spec" >&2 2>/dev/null)
          file=$(ls "$CACHE"/debs/"${name}"_*"${ver#*:}"_*.deb | head -1)
        fi
        mkdir -p "$dir.tmp" && dpkg-deb -x "$file" "$dir.tmp" ;;
    esac
    mv "$dir.tmp" "$dir"
  fi
  printf %s "$dir"
}

pairs_file="$CACHE/pairs.tsv"
: > "$pairs_file"
for p in "${PAIRS[@]}"; do
  read -r name kind old new <<<"$p"
  v_old=${old#*=}; v_new=${new#*=}
  printf '%s %s -> %s\t%s\t%s\n' "$name" "${v_old#=}" "${v_new#=}" \
    "$(tree_of "$kind" "$old")" "$(tree_of "$kind" "$new")" >> "$pairs_file"
done
# Show what is compared (names and sizes of the unpacked trees).
cut -f1 "$pairs_file" | paste - <(cut -f3 "$pairs_file" | xargs du -sh | cut -f1) >&2

cd "$here"
NARLINK_PAIRS="$pairs_file" NARLINK_TSV="$CACHE/results.tsv" \
  cargo bench --bench chunk_params "$@"
