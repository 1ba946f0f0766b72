#!/usr/bin/env bash
# On the GPU machine, in one call: build with CUDA, run the correctness tests on the GPU (MoE
# dispatchers and layouts against the single-process layer, Hugging Face parity in fp32 with
# NCCL, dense layouts, training with the distributed optimizer and recomputation), then the
# performance baseline of issue 7: foldtron's trainer (with a traced step, summarized by
# bench/trace_summary.py) and the PyTorch-native step (bench/torch_native_moe.py, eager and
# torch.compile) on the reference config, mixtral-8x7b truncated to 4 layers, sequence 4096,
# micro-batch 2, bf16, dropless, one GPU; then two-GPU layouts.
# Every step has a time limit. The reference vectors travel in .gpu/reference (carry it).
# Usage: scripts/gpu_moe.sh [output dir]; PARTS="tests one mb1 torch two" (the default) picks what
# runs ("fold" runs only the folded, recomputation and context-parallel rows of "two"; "pipe" the
# pipeline-parallel rows; "probe" the gradient-accumulation fusion probe; "moments" the reference
# with bf16 AdamW moments (at global batch 16 too, with "accum"); "accum" global batch 16 in
# micro-batches of ACCUM_MB (2 unless set), foldtron; "torch_accum" the same, PyTorch-native;
# "ratio" foldtron at global batch 16 (micro-batch 4, bf16 moments) against the compiled
# PyTorch-native step (on one batch reused and on fresh batches), then foldtron at global batch
# 2, and the ratios of the step times
# (issue 20's 1.05x; TRACE_ACCUM=1 traces both; with "bf16grads" foldtron's two runs also with
# bf16 main gradients); "combine" bench/combine_copies, the combine
# kernels against torch's operations; "wgrad" bench/grouped_wgrad, the grouped weight-gradient
# kernel's tile shapes against the per-expert GEMMs (CUTLASS's headers carried in .gpu/; WGRAD_RUNS
# names some of its runs: mixtral mixtral_spread qwen2 qwen2_1024); "cp"
# bench/cp_attention, one context-parallel rank's attention pieces at 32K-128K); TESTS the GPU
# test binaries of the tests part (GTEST_FILTER picks their tests);
# CTEST_ARGS replaces the build's "-L unit" (e.g. "-R ^$" runs no test); BUILD_TARGETS builds only
# those targets; KEEP_BINARY=1 puts the stripped binary in the output folder, and BINARY=path runs
# a binary brought back so instead of building; TRACE_ACCUM=1 traces step 13 of the "accum",
# "moments" (global batch 16) and "torch_accum" runs and summarizes each (bench/trace_summary.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=8 source scripts/gpu_env.sh
parts=${PARTS:-tests one mb1 torch two}
accum_mb=${ACCUM_MB:-2}
[[ $accum_mb =~ ^(1|2|4|8|16)$ ]] || { echo "gpu_moe.sh: ACCUM_MB must divide 16 (1, 2, 4, 8 or 16)" >&2; exit 2; }
bench_args=
for part_bench in combine:combine_copies cp:cp_attention wgrad:grouped_wgrad; do  # the benchmark programs too
  has "${part_bench%%:*}" || continue
  if [[ ${part_bench%%:*} == wgrad && ! -f .gpu/cutlass-include.tar.gz && -z ${CUTLASS_DIR:-} ]]; then
    echo "gpu_moe.sh: part wgrad needs CUTLASS's headers: make .gpu/cutlass-include.tar.gz" \
         "(scripts/cutlass_headers.sh) and carry it, or set CUTLASS_DIR" >&2
    exit 2
  fi
  [[ -z ${BINARY:-} ]] || { echo "gpu_moe.sh: part ${part_bench%%:*} builds bench/${part_bench#*:}: not with BINARY" >&2; exit 2; }
  bench_args=-DFOLDTRON_BUILD_BENCH=ON
  [[ -n ${BUILD_TARGETS:-} ]] && export BUILD_TARGETS="$BUILD_TARGETS ${part_bench#*:}"
done
if [[ -n ${BINARY:-} ]]; then
  # A binary that an earlier call built and brought back (no tests part then): no build.
  mkdir -p build-gpu/bin && cp "$BINARY" build-gpu/bin/foldtron && chmod +x build-gpu/bin/foldtron
else
  # Line tables (-g1) for crash stacks; warnings are the CPU build's to stop on; BUILD_TARGETS
  # (e.g. "foldtron test_dense") builds only those.
  GPU_CMAKE_ARGS="-DFOLDTRON_REFERENCE_DIR=$PWD/.gpu/reference -DFOLDTRON_WERROR=OFF -DCMAKE_CXX_FLAGS=-g1 $bench_args" \
    scripts/gpu_build.sh ${CTEST_ARGS:--L unit} > "$out/build.log" 2>&1
  echo "== build and unit tests: rc=$?"
  [[ -x build-gpu/bin/foldtron ]] || { tail -40 "$out/build.log"; exit 1; }
  grep -E "tests passed|FAILED" "$out/build.log"
  # The binary without its line tables, for a later call's BINARY (it links the torch wheel's
  # libraries and NCCL from the image, nothing of build-gpu).
  [[ -n ${KEEP_BINARY:-} ]] && strip -o "$out/foldtron" build-gpu/bin/foldtron
fi
has tests && for np in 1 $gpus; do
  for t in ${TESTS:-test_moe test_hf_parity test_dense test_train}; do
    step 120 $mpi -np "$np" build-gpu/tests/parallel/$t --device=cuda --gtest_brief=1 --gtest_filter="${GTEST_FILTER:-*}" \
      > "$out/${t}_np$np.log" 2>&1
    grep -E "PASSED|FAILED|worst|layouts" "$out/${t}_np$np.log" | head -8
  done
  [[ $gpus -eq 1 ]] && break
done
# The reference config on one GPU: 15 steps (the metrics file has each; docs take the median of
# the last 10), then micro-batch 1, then the PyTorch-native step eager and compiled.
ref=(--preset mixtral-8x7b --set model.num_layers=4 --seq-length 4096 --train-iters 15 --log-interval 1
  --set data.mock=true --device cuda)
run_train() {  # run_train NAME RANKS SECONDS FLAGS...
  local name=$1 np=$2 limit=$3; shift 3
  step "$limit" $mpi -np "$np" build-gpu/bin/foldtron train "$@" --metrics-file "$out/$name.jsonl" > "$out/$name.log" 2>&1
  grep -E "step (1|15)/|mean step|error" "$out/$name.log" | cut -c1-250
}
run_native() {  # run_native NAME SECONDS FLAGS...: the PyTorch-native step (bench/torch_native_moe.py)
  local name=$1 limit=$2; shift 2
  step "$limit" python3 bench/torch_native_moe.py "$@" > "$out/$name.log" 2>&1
  grep RESULT "$out/$name.log" || tail -20 "$out/$name.log"
}
# The reference run traces its step 13 (logging.profile_step) for bench/trace_summary.py.
if has one; then
  run_train mixtral4_mb2 1 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 2 \
    --set logging.profile_step=13 --set "logging.profile_file=$out/mixtral4_mb2_trace.json"
  python3 bench/trace_summary.py "$out/mixtral4_mb2_trace.json" --top 25 > "$out/mixtral4_mb2_profile.txt" 2>&1
  head -45 "$out/mixtral4_mb2_profile.txt"
  gzip -f "$out/mixtral4_mb2_trace.json"
fi
if has probe; then  # what gradient-accumulation fusion could save (bench/wgrad_fusion_probe.py)
  step 120 python3 bench/wgrad_fusion_probe.py > "$out/wgrad_probe.log" 2>&1
  grep -E "RESULT|torch|diff" "$out/wgrad_probe.log" | cut -c1-250
fi
# The same with the AdamW moments stored in bf16 (train.adam_moments_dtype), traced likewise.
if has moments; then
  run_train mixtral4_mb2_bf16moments 1 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 2 \
    --set train.adam_moments_dtype=bf16 --set logging.profile_step=13 \
    --set "logging.profile_file=$out/mixtral4_mb2_bf16moments_trace.json"
  python3 bench/trace_summary.py "$out/mixtral4_mb2_bf16moments_trace.json" --top 10 > "$out/mixtral4_mb2_bf16moments_profile.txt" 2>&1
  head -20 "$out/mixtral4_mb2_bf16moments_profile.txt"
  gzip -f "$out/mixtral4_mb2_bf16moments_trace.json"
fi
has mb1 && run_train mixtral4_mb1 1 300 "${ref[@]}" --micro-batch-size 1 --global-batch-size 1
if has torch; then
  run_native torch_eager 300
  run_native torch_compile 400 --compile
fi
if has combine; then  # the combine kernels against torch's operations, micro-batch 2 and 4
  for tokens in 8192 16384; do
    step 60 build-gpu/bin/combine_copies --tokens $tokens > "$out/combine_$tokens.log" 2>&1
    grep -E "combine:|RESULT|error" "$out/combine_$tokens.log"
  done
fi
if has wgrad; then  # the grouped weight-gradient kernel's tile shapes against the per-expert GEMMs
  # Mixtral-8x7B at micro-batch 4 (even and uneven rows), Qwen2-57B-A14B's 64 experts at micro-batch
  # 4 and 2 (2,048 and 1,024 rows each).
  for run in "mixtral --spread 0" "mixtral_spread --spread 0.5" \
      "qwen2 --experts 64 --rows 2048 --hidden 3584 --ffn 2560" \
      "qwen2_1024 --experts 64 --rows 1024 --hidden 3584 --ffn 2560"; do
    set -- $run
    [[ -z ${WGRAD_RUNS:-} || " $WGRAD_RUNS " == *" $1 "* ]] || continue
    step 120 build-gpu/bin/grouped_wgrad --iters 10 "${@:2}" > "$out/grouped_wgrad_$1.log" 2>&1
    grep -vE "^RESULT" "$out/grouped_wgrad_$1.log"
  done
fi
if has cp; then  # one cp rank's attention pieces (all-gather, ring) against the whole causal attention
  for run in "32768 2 0" "65536 2 0" "131072 2 0" "131072 2 1" "131072 4 0"; do
    set -- $run
    step 120 build-gpu/bin/cp_attention --seq "$1" --cp "$2" --rank "$3" > "$out/cp_attention_$1_cp$2_r$3.log" 2>&1
    grep -E "cp_attention:|RESULT|error" "$out/cp_attention_$1_cp$2_r$3.log"
  done
fi
# Gradient accumulation as training runs it: global batch 16 in micro-batches of ACCUM_MB per
# AdamW step, foldtron (with bf16 moments too where "moments" is named); "torch_accum" the
# PyTorch-native step likewise (its bf16 gradients add up), eager and compiled.
# TRACE_ACCUM=1 traces step 13 of each of these runs and summarizes it (NAME_profile.txt), so the
# two steps compare category by category.
accum=$((16 / accum_mb))
trace_flags=()
traced() {  # traced NAME foldtron|native: trace_flags = the flags that trace step 13 into $out/NAME_trace.json
  trace_flags=()
  [[ ${TRACE_ACCUM:-0} == 1 ]] || return 0
  if [[ $2 == foldtron ]]; then
    trace_flags=(--set logging.profile_step=13 --set "logging.profile_file=$out/$1_trace.json")
  else
    trace_flags=(--profile-step 13 --profile-file "$out/$1_trace.json")
  fi
}
summarize() {  # summarize NAME: the traced step's categories, then the trace compressed
  [[ ${TRACE_ACCUM:-0} == 1 && -f $out/$1_trace.json ]] || return 0
  python3 bench/trace_summary.py "$out/$1_trace.json" --top 25 > "$out/$1_profile.txt" 2>&1
  head -16 "$out/$1_profile.txt"
  gzip -f "$out/$1_trace.json"
}
if has accum; then
  name=mixtral4_gbs16_mb$accum_mb
  traced $name foldtron
  run_train $name 1 300 "${ref[@]}" --micro-batch-size "$accum_mb" --global-batch-size 16 "${trace_flags[@]}"
  summarize $name
  if has moments; then
    name=mixtral4_gbs16_mb${accum_mb}_bf16moments
    traced $name foldtron
    run_train $name 1 300 "${ref[@]}" --micro-batch-size "$accum_mb" --global-batch-size 16 \
      --set train.adam_moments_dtype=bf16 "${trace_flags[@]}"
    summarize $name
  fi
fi
if has torch_accum; then
  name=torch_eager_mb${accum_mb}_accum$accum
  traced $name native
  run_native $name 300 --micro-batch "$accum_mb" --accum $accum "${trace_flags[@]}"
  summarize $name
  name=torch_compile_mb${accum_mb}_accum$accum
  traced $name native
  run_native $name 400 --micro-batch "$accum_mb" --accum $accum --compile "${trace_flags[@]}"
  summarize $name
fi
if has ratio; then
  name=mixtral4_gbs16_mb4_bf16moments
  traced $name foldtron
  run_train $name 1 300 "${ref[@]}" --micro-batch-size 4 --global-batch-size 16 \
    --set train.adam_moments_dtype=bf16 "${trace_flags[@]}"
  summarize $name
  if has bf16grads; then  # the same with bf16 main gradients (train.main_grads_dtype)
    name=mixtral4_gbs16_mb4_bf16moments_bf16grads
    traced $name foldtron
    run_train $name 1 300 "${ref[@]}" --micro-batch-size 4 --global-batch-size 16 \
      --set train.adam_moments_dtype=bf16 --set train.main_grads_dtype=bf16 "${trace_flags[@]}"
    summarize $name
  fi
  # The native step on one batch reused (bench/torch_native_moe.py's default, which it learns by
  # heart) and on fresh random batches, as foldtron's mock data.
  for data in fixed fresh; do
    name=torch_compile_mb4_accum4
    [[ $data == fresh ]] && name+=_fresh
    traced $name native
    run_native $name 400 --micro-batch 4 --accum 4 --compile --data $data "${trace_flags[@]}"
    summarize $name
  done
  run_train mixtral4_mb2_bf16moments 1 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 2 \
    --set train.adam_moments_dtype=bf16
  has bf16grads && run_train mixtral4_mb2_bf16moments_bf16grads 1 300 "${ref[@]}" --micro-batch-size 2 \
    --global-batch-size 2 --set train.adam_moments_dtype=bf16 --set train.main_grads_dtype=bf16
  # Medians of steps 6-15 without step 13 (traced with TRACE_ACCUM=1; the native step then
  # leaves it out too).
  step 30 python3 - "$out" <<'PY'
import json, os, statistics, sys
out = sys.argv[1]
def median(name):
    rows = [json.loads(line) for line in open(f"{out}/{name}.jsonl")]
    return statistics.median(r["step_time_s"] for r in rows if 6 <= r["step"] <= 15 and r["step"] != 13)
natives = {}
for data, log in (("one batch", "torch_compile_mb4_accum4"), ("fresh batches", "torch_compile_mb4_accum4_fresh")):
    native = [json.loads(l[7:]) for l in open(f"{out}/{log}.log") if l.startswith("RESULT ")]
    natives[data] = native[0]["step_time_s"] if native else None
for grads in ("", "_bf16grads"):  # fp32 main gradients, then bf16 ones where they ran
    names = (f"mixtral4_gbs16_mb4_bf16moments{grads}", f"mixtral4_mb2_bf16moments{grads}")
    if not all(os.path.exists(f"{out}/{name}.jsonl") for name in names):
        continue
    ours, gb2 = (median(name) for name in names)
    print(f"foldtron{' with bf16 main gradients' if grads else ''} {ours:.4f} s; global batch 2 {gb2:.4f} s")
    for data, native_s in natives.items():
        print(f"  ratio to the compiled step on {data}: " +
              (f"{native_s:.4f} s, {native_s / ours:.4f}x" if native_s else "no RESULT"))
PY
fi
if has two && [[ $gpus -ge 2 ]]; then
  # Two GPUs: expert parallel, tensor parallel, and folded (attention tp 2, experts ep 2 x etp 1).
  run_train mixtral4_ep2 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 4 --ep 2
  run_train mixtral4_ep2_distopt 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 4 --ep 2 \
    --set parallel.distributed_optimizer=true
  run_train mixtral4_tp2 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 2 --tp 2 --sequence-parallel
fi
if (has two || has fold) && [[ $gpus -ge 2 ]]; then
  run_train mixtral4_tp2_ep2 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 2 --tp 2 \
    --sequence-parallel --ep 2 --etp 1
  run_train mixtral4_tp2_ep2_recompute 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 2 --tp 2 \
    --sequence-parallel --ep 2 --etp 1 --set model.recompute=selective
  run_train mixtral4_cp2_ep2 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 2 --cp 2 --ep 2 --etp 1
fi
if has pipe && [[ $gpus -ge 2 ]]; then
  # Pipeline parallelism over 2 GPUs, 8 micro-batches of 2 per step: 1F1B, then interleaved.
  run_train mixtral4_pp2 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 16 --pp 2
  run_train mixtral4_pp2_vpp2 2 300 "${ref[@]}" --micro-batch-size 2 --global-batch-size 16 --pp 2 --vpp 2
fi
if has two && [[ $gpus -ge 2 ]]; then
  # Qwen2-57B-A14B truncated to 4 layers (64 experts top-8, shared expert): too large for one
  # GPU with fp32 main weights and moments, so experts over 2.
  run_train qwen2_4_ep2 2 300 --preset qwen2-57b-a14b --set model.num_layers=4 --seq-length 4096 --train-iters 15 \
    --log-interval 1 --set data.mock=true --device cuda --micro-batch-size 2 --global-batch-size 4 --ep 2
fi
exit $status
