#!/usr/bin/env bash
# On the GPU machine, in one call: build with CUDA (scripts/gpu_build.sh, which also runs the CPU
# unit tests), check that MPI starts, run the multi-rank communication tests with the NCCL
# backend on one GPU and on every GPU, and measure all_reduce / all_to_all bus bandwidth from
# 1 MB to 1 GB. Every step has a time limit, so a hang costs minutes, not the whole call.
# Usage: scripts/gpu_comm.sh [output dir]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=4 source scripts/gpu_env.sh
GPU_CMAKE_ARGS=-DFOLDTRON_BUILD_BENCH=ON scripts/gpu_build.sh -L unit 2>&1 | tail -3 || exit 1
step 30 $mpi -np 2 hostname
step 90 $mpi -np 2 build-gpu/tests/parallel/test_comm --gtest_brief=1
if [[ -n ${NCCL_PROBE:-} ]]; then
  # Diagnosis of NCCL start-up: try each variant (a line of NCCL_PROBE, e.g. NCCL_SOCKET_IFNAME=lo)
  # on one small test; the first that passes is used for the rest of the run.
  ip -brief addr 2>/dev/null || cat /proc/net/dev
  while read -r variant; do
    [[ -z $variant ]] && continue
    echo "== variant: $variant"
    status=0
    step 30 env $variant NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,BOOTSTRAP,NET $mpi -x NCCL_DEBUG_SUBSYS \
      $(for v in $variant; do echo "-x ${v%%=*}"; done) -np 2 build-gpu/tests/parallel/test_comm --device=cuda \
      --gtest_brief=1 --gtest_filter=Comm.AllReduceEveryDtypeAndOp > "$out/probe.log" 2>&1
    grep -vE "^\s*$" "$out/probe.log" | tail -12
    if [[ $status -eq 0 ]]; then
      export $variant
      for v in $variant; do mpi="$mpi -x ${v%%=*}"; done
      echo "== using $variant"
      nccl_ok=1
      break
    fi
  done <<< "$NCCL_PROBE"
  status=0
  [[ -n ${nccl_ok:-} ]] || { echo "== no variant started NCCL on 2 ranks: one-GPU runs only"; gpus=1; probe_failed=1; }
fi
for np in $(echo 1 "$gpus" | tr ' ' '\n' | sort -un); do
  for t in test_comm test_mappings test_groups; do
    step 60 $mpi -np "$np" build-gpu/tests/parallel/$t --device=cuda
    [[ $status -eq 0 ]] || break 2  # a failing NCCL run: stop here rather than time out again
  done
done
if [[ $gpus -ge 2 && $status -eq 0 ]]; then
  step 150 $mpi -np "$gpus" build-gpu/bin/comm_bandwidth --device cuda --max-mb 1024 --iters 20
fi
nvidia-smi topo -m || true
exit $(( status || ${probe_failed:-0} ))
