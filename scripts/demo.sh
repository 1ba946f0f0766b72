#!/usr/bin/env bash
# The demo, from text to a trained model with validation loss, a plot and a sample:
#   1. trains a sentencepiece tokenizer (BPE, 2048 pieces) on the English license texts every
#      Debian-family system carries in /usr/share/common-licenses;
#   2. preprocesses the same texts (a document per paragraph) into an indexed dataset;
#   3. trains the demo MoE (configs/demo.yaml) on 4 MPI ranks with a validation split
#      (969,30,1 of the paragraphs), evaluating every 50 steps;
#   4. plots the metrics to build/demo/loss.svg; the training ends with a sampled continuation.
# Usage: scripts/demo.sh [extra foldtron train arguments, e.g. --train-iters 20]
# Needs a build (scripts/build.sh). Writes $BUILD_DIR/demo/ (build/demo/). DEMO_CORPUS: another
# folder of text; DEMO_RANKS: the MPI ranks (4; the demo layout needs a multiple of 4).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
foldtron="$build_dir/bin/foldtron"
out="$build_dir/demo"
corpus=${DEMO_CORPUS:-/usr/share/common-licenses}
ranks=${DEMO_RANKS:-4}
if [[ ! -x "$foldtron" ]]; then
  echo "demo: $foldtron is missing; build first with scripts/build.sh" >&2
  exit 1
fi
mkdir -p "$out"
mapfile -t inputs < <(find "$corpus" -type f | LC_ALL=C sort)
if [[ ${#inputs[@]} -eq 0 ]]; then
  echo "demo: no text under $corpus (install the base-files package, or set DEMO_CORPUS to a folder of text)" >&2
  exit 1
fi
"$foldtron" tokenizer train --input "${inputs[@]}" --model-prefix "$out/spm" --vocab-size 2048 \
  --model-type bpe --character-coverage 1.0 2> "$out/tokenizer.log" \
  || { cat "$out/tokenizer.log" >&2; exit 1; }
grep "wrote" "$out/tokenizer.log" || true
"$foldtron" preprocess --input "${inputs[@]}" --paragraphs --tokenizer "$out/spm.model" --output-prefix "$out/licenses"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun --oversubscribe -np "$ranks" "$foldtron" train --preset demo \
  --set data.path="$out/licenses" --set data.tokenizer=sentencepiece --set data.tokenizer_model="$out/spm.model" \
  --metrics-file "$out/metrics.jsonl" "$@"
"$foldtron" plot "$out/metrics.jsonl" -o "$out/loss.svg" --title "demo: MoE on the license texts (4 ranks)"
