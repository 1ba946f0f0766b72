#!/usr/bin/env bash
# Packs CUTLASS's headers (include/ and the license) at the pinned commit into
# .gpu/cutlass-include.tar.gz: GPU calls carry it, and scripts/gpu_build.sh unpacks it to build
# the experts' grouped weight-gradient kernel (FOLDTRON_CUTLASS_DIR; CUTLASS is header-only).
# The tar is made reproducibly (sorted names, time 0, owner 0) and its sha256 (before gzip) is
# checked against the one recorded here (made with GNU tar 1.34; another tar may lay it out
# differently).
# Usage: scripts/cutlass_headers.sh [CUTLASS_GIT_DIR]   (a clone or mirror of NVIDIA/cutlass that
#        has the commit; without one, the script clones it from GitHub)
set -euo pipefail
src=${1:-}
[[ -z $src ]] || src=$(cd "$src" && pwd)  # before the cd below: a path relative to the caller
cd "$(dirname "$0")/.."
commit=7107b05535f8977f5ecb9d01ee203205b1fd9bc4  # CUTLASS 4.7.0 (main branch, 2026-08-20)
tar_sha256=d7829e85ce3a2ca78e12e78f04f72ecd2b68991836d9194df93941e94f1c923d  # GNU tar 1.34's output
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z $src ]]; then
  git clone --quiet --filter=blob:none --no-checkout https://github.com/NVIDIA/cutlass "$work/clone"
  src=$work/clone
fi
if ! git -C "$src" cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "cutlass_headers.sh: $src does not have CUTLASS commit $commit: fetch it there," \
       "or give a clone that has it" >&2
  exit 2
fi
mkdir -p "$work/tree" .gpu
git -C "$src" archive --format=tar "$commit" include LICENSE.txt | tar -x -C "$work/tree"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/tree" -cf "$work/cutlass.tar" \
  include LICENSE.txt
got=$(sha256sum "$work/cutlass.tar" | cut -d' ' -f1)
if [[ $got != "$tar_sha256" ]]; then
  echo "cutlass_headers.sh: the headers' tar has sha256 $got, not the recorded $tar_sha256" \
       "(another CUTLASS tree, or a tar other than GNU tar 1.34)" >&2
  exit 1
fi
gzip -9n < "$work/cutlass.tar" > .gpu/cutlass-include.tar.gz
echo ".gpu/cutlass-include.tar.gz: CUTLASS $commit, tar sha256 $got, $(du -h .gpu/cutlass-include.tar.gz | cut -f1)"
