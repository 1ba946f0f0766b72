# Sourced by the GPU scripts (scripts/gpu_*.sh): the NCCL/MPI environment of the GPU machine, the
# library path of the torch wheel's NCCL, `$mpi` (the mpirun line that forwards it), `$gpus`, and
# `has PART` (whether $parts, set by the script, names PART), and
# `step SECONDS COMMAND...`, which runs a command under a time limit, prints its exit code and
# sets `status=1` when it fails (so a hang costs minutes, not the whole device call).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# One machine: NCCL's bootstrap over loopback (the default eth0 of the GPU VM does not connect).
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
gpus=$(nvidia-smi -L | wc -l)
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH=$site/nvidia/nccl/lib:$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
mpi="mpirun --oversubscribe --bind-to none ${MPI_FLAGS:-} -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x NCCL_DEBUG -x OMP_NUM_THREADS -x NCCL_SOCKET_IFNAME"
status=0
step() {
  local limit=$1; shift
  echo "== $* (limit ${limit}s)"
  timeout -k 5 "$limit" "$@"
  local rc=$?
  echo "== rc=$rc"
  [[ $rc -eq 0 ]] || status=1
}
has() { [[ " ${parts:-} " == *" $1 "* ]]; }
