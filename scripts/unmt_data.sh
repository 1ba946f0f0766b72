#!/usr/bin/env bash
# Turns the translation corpus (scripts/unmt_corpus.sh) into what the translation task reads: a
# shared sentencepiece vocabulary over English, German and French trained on the training text
# only (the monolingual sides and the En-Fr pairs; never a dev, test or En-De parallel line), and
# one indexed dataset per corpus file (NAME.bin/.idx). Writes SHA256SUMS of the results.
#   scripts/unmt_data.sh CORPUS OUT [VOCAB]   (default vocabulary 8000; FOLDTRON=path/to/foldtron)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${1:?usage: scripts/unmt_data.sh CORPUS OUT [VOCAB]}
out=${2:?usage: scripts/unmt_data.sh CORPUS OUT [VOCAB]}
vocab=${3:-8000}
foldtron=${FOLDTRON:-$here/build/bin/foldtron}
[[ -x $foldtron ]] || { echo "error: $foldtron not found; run scripts/build.sh first (or set FOLDTRON)" >&2; exit 2; }
[[ -f $corpus/train.en ]] || { echo "error: $corpus/train.en not found; build the corpus with scripts/unmt_corpus.sh" >&2; exit 2; }
mkdir -p "$out"
"$foldtron" tokenizer train --input "$corpus/train.en" "$corpus/train.de" "$corpus/train.en-fr.en" \
  "$corpus/train.en-fr.fr" --model-prefix "$out/spm" --vocab-size "$vocab" --seed 1
for file in "$corpus"/train.* "$corpus"/dev.* "$corpus"/test.*; do
  name=$(basename "$file")
  [[ $name == SHA256SUMS ]] && continue
  "$foldtron" preprocess --input "$file" --tokenizer "$out/spm.model" --output-prefix "$out/$name" --quiet
done
(cd "$out" && sha256sum spm.model ./*.bin ./*.idx > SHA256SUMS)
echo "datasets and tokenizer in $out"
