#!/usr/bin/env bash
# Builds the translation corpus from Debian's archive: fetches the pinned packages of
# configs/unmt/packages.txt with apt-get download (no install), unpacks them, fetches the package
# descriptions in English, German and French (apt-get update into a lists folder of its own), and
# runs `foldtron unmt corpus` over both with the held-out package list. Writes SHA256SUMS of every
# input (.deb, Translation file) and of every split file.
#   scripts/unmt_corpus.sh [OUT]   (default build/unmt; FOLDTRON=path/to/foldtron;
#                                   HELDOUT=the held-out package list, default ../shared/data/ddtp_heldout_packages.txt)
# Needs network access to the Debian mirror apt is configured for; about 30 MB.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/build/unmt}
foldtron=${FOLDTRON:-$here/build/bin/foldtron}
heldout=${HELDOUT:-$here/../shared/data/ddtp_heldout_packages.txt}
[[ -x $foldtron ]] || { echo "error: $foldtron not found; run scripts/build.sh first (or set FOLDTRON)" >&2; exit 2; }
[[ -r $heldout ]] || { echo "error: held-out package list $heldout not found; set HELDOUT=FILE" >&2; exit 2; }
mkdir -p "$out/unpacked" "$out/descriptions" "$out/corpus"
source "$here/scripts/lib/debian_pins.sh"

echo "== packages (configs/unmt/packages.txt)"
fetch_pinned "$here/configs/unmt/packages.txt" "$out" -o Acquire::Languages=en,de,fr
for deb in "${pinned_debs[@]}"; do dpkg-deb -x "$deb" "$out/unpacked"; done

echo "== descriptions"
for lang in en de fr; do
  file=$(ls "$out/lists/"*_debian_dists_bookworm_main_i18n_Translation-$lang* | head -1)
  /usr/lib/apt/apt-helper cat-file "$file" > "$out/descriptions/Translation-$lang"
done

echo "== corpus"
"$foldtron" unmt corpus --catalogs "$out/unpacked" --descriptions "$out/descriptions" --heldout "$heldout" \
  --output "$out/corpus"
(cd "$out" && sha256sum debs/*.deb descriptions/Translation-* > inputs.sha256)
(cd "$out/corpus" && sha256sum train.* dev.* test.* > SHA256SUMS)
echo "corpus in $out/corpus (checksums: SHA256SUMS; inputs: $out/inputs.sha256)"
