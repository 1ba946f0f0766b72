#!/usr/bin/env bash
# Builds the silver discourse corpus from Debian's archive: fetches the pinned documentation
# packages of configs/discourse/packages.txt with apt-get download (no install), unpacks them and
# runs `foldtron discourse corpus` over their HTML manuals. Writes SHA256SUMS of the inputs and of
# the splits.
#   scripts/discourse_corpus.sh [OUT]   (default build/discourse; FOLDTRON=path/to/foldtron)
# Needs network access to the Debian mirror apt is configured for; about 17 MB.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/build/discourse}
foldtron=${FOLDTRON:-$here/build/bin/foldtron}
[[ -x $foldtron ]] || { echo "error: $foldtron not found; run scripts/build.sh first (or set FOLDTRON)" >&2; exit 2; }
mkdir -p "$out/unpacked" "$out/corpus"
source "$here/scripts/lib/debian_pins.sh"

echo "== packages (configs/discourse/packages.txt)"
fetch_pinned "$here/configs/discourse/packages.txt" "$out"
docs=()
for deb in "${pinned_debs[@]}"; do
  name=$(dpkg-deb -f "$deb" Package)
  rm -rf "${out:?}/unpacked/$name"
  dpkg-deb -x "$deb" "$out/unpacked/$name"
  docs+=(--docs "$out/unpacked/$name")
done

echo "== corpus"
"$foldtron" discourse corpus "${docs[@]}" --output "$out/corpus"
(cd "$out" && sha256sum debs/*.deb > inputs.sha256)
(cd "$out/corpus" && sha256sum train.json dev.json test.json train.prose.txt > SHA256SUMS)
echo "corpus in $out/corpus (checksums: SHA256SUMS; inputs: $out/inputs.sha256)"
