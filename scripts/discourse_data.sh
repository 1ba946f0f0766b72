#!/usr/bin/env bash
# Prepares what the discourse experiment reads besides the corpus: a sentencepiece vocabulary
# trained on the English prose of the silver corpus's training documents (train.prose.txt) and
# that prose as the indexed dataset train.en, which configs/discourse/mlm.yaml pretrains the
# contextual encoder on. Dev and test documents are never read. Writes SHA256SUMS of the results.
#   scripts/discourse_data.sh CORPUS OUT [VOCAB]   (default vocabulary 8000; FOLDTRON=path/to/foldtron)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${1:?usage: scripts/discourse_data.sh CORPUS OUT [VOCAB]}
out=${2:?usage: scripts/discourse_data.sh CORPUS OUT [VOCAB]}
vocab=${3:-8000}
foldtron=${FOLDTRON:-$here/build/bin/foldtron}
[[ -x $foldtron ]] || { echo "error: $foldtron not found; run scripts/build.sh first (or set FOLDTRON)" >&2; exit 2; }
[[ -f $corpus/train.prose.txt ]] || {
  echo "error: $corpus/train.prose.txt not found; build the corpus with scripts/discourse_corpus.sh" >&2; exit 2; }
mkdir -p "$out"
"$foldtron" tokenizer train --input "$corpus/train.prose.txt" --model-prefix "$out/spm" --vocab-size "$vocab" --seed 1
"$foldtron" preprocess --input "$corpus/train.prose.txt" --tokenizer "$out/spm.model" --output-prefix "$out/train.en" --quiet
(cd "$out" && sha256sum spm.model train.en.bin train.en.idx > SHA256SUMS)
echo "tokenizer and dataset in $out"
