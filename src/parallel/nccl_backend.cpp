// NCCL backend (see nccl_backend.h).
#include "parallel/nccl_backend.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <fmt/format.h>
#include <nccl.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/mpi_runtime.h"

namespace foldtron {
namespace {

ncclDataType_t nccl_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kHalf: return ncclFloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    case torch::kChar: return ncclInt8;
    case torch::kByte:
    case torch::kBool: return ncclUint8;
    default:
      throw CommError(fmt::format("the NCCL backend cannot move tensors of dtype {}", c10::toString(type)),
                      "use fp32, fp64, bf16, fp16, int8, int32, int64, uint8 or bool");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
  }
  return ncclSum;
}

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

}  // namespace

struct NcclBackend::State {
  std::string group;
  double timeout_s = 600;
  int device = 0;
  int rank = 0;
  int size = 1;
  ncclComm_t comm = nullptr;
  c10::cuda::CUDAStream stream;

  struct Pending {
    std::shared_ptr<at::cuda::CUDAEvent> done;
    std::string operation;
    std::chrono::steady_clock::time_point start;
  };
  std::mutex mutex;
  std::deque<Pending> pending;
  std::atomic<bool> stop{false};
  std::thread watchdog;

  explicit State(c10::cuda::CUDAStream s) : stream(s) {}

  void check(ncclResult_t result, const char* operation) {
    if (result == ncclSuccess || result == ncclInProgress) return;
    throw CommError(fmt::format("NCCL {} on group '{}' failed on world rank {}: {} ({})", operation, group,
                                world_rank(), ncclGetErrorString(result), comm ? ncclGetLastError(comm) : ""),
                    "NCCL_DEBUG=WARN prints NCCL's own diagnosis; check that every rank runs the same collectives");
  }

  void watch() {
    while (!stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard<std::mutex> lock(mutex);
      while (!pending.empty() && pending.front().done->query()) pending.pop_front();
      ncclResult_t async_error = ncclSuccess;
      ncclCommGetAsyncError(comm, &async_error);
      std::string problem;
      if (async_error != ncclSuccess && async_error != ncclInProgress) {
        problem = fmt::format("NCCL reported an asynchronous error on group '{}': {}", group,
                              ncclGetErrorString(async_error));
      } else if (!pending.empty()) {
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - pending.front().start).count();
        if (waited > timeout_s) {
          problem = fmt::format("NCCL {} on group '{}' did not finish within {} s", pending.front().operation, group,
                                timeout_s);
        }
      }
      if (!problem.empty()) {
        ncclCommAbort(comm);
        abort_job(fmt::format("foldtron: communication error: {} on world rank {}\n  hint: another rank of the group "
                              "failed or never reached this collective; its log names the cause\n",
                              problem, world_rank()),
                  2);
      }
    }
  }

  // Runs `launch` on the communication stream after the caller's queued work; returns the Work.
  WorkPtr run(const char* operation, const std::vector<torch::Tensor>& tensors, torch::Tensor result,
              const std::function<void(cudaStream_t)>& launch) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device));
    at::cuda::CUDAEvent ready(cudaEventDisableTiming);
    ready.record(caller);
    ready.block(stream);
    for (const torch::Tensor& t : tensors) {
      if (t.defined() && t.numel() > 0) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), stream);
    }
    launch(stream.stream());
    auto done = std::make_shared<at::cuda::CUDAEvent>(cudaEventDisableTiming);
    done->record(stream);
    {
      std::lock_guard<std::mutex> lock(mutex);
      pending.push_back({done, operation, std::chrono::steady_clock::now()});
    }
    return std::make_unique<NcclWork>(done, std::move(result), device);
  }

  class NcclWork : public Work {
   public:
    NcclWork(std::shared_ptr<at::cuda::CUDAEvent> done, torch::Tensor result, int device)
        : done_(std::move(done)), result_(std::move(result)), device_(device) {}
    torch::Tensor wait() override {
      done_->block(c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)));
      return result_;
    }

   private:
    std::shared_ptr<at::cuda::CUDAEvent> done_;
    torch::Tensor result_;
    int device_;
  };
};

NcclBackend::NcclBackend(MPI_Comm comm, std::string group, double timeout_s, int device) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  state_ = std::make_shared<State>(c10::cuda::getStreamFromPool(true, static_cast<c10::DeviceIndex>(device)));
  State& s = *state_;
  s.group = std::move(group);
  s.timeout_s = timeout_s;
  s.device = device;
  MPI_Comm_rank(comm, &s.rank);
  MPI_Comm_size(comm, &s.size);
  ncclUniqueId id;
  if (s.rank == 0) s.check(ncclGetUniqueId(&id), "get_unique_id");
  mpi_check(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm), "broadcast of the NCCL id", s.group);
  // Initialization blocks until every rank of the group joins; run it aside so a rank that never
  // joins (or a bootstrap network that cannot connect) ends the job after the timeout.
  auto init = std::async(std::launch::async, [&s, id, device] {
    c10::cuda::CUDAGuard init_guard(static_cast<c10::DeviceIndex>(device));
    return ncclCommInitRank(&s.comm, s.size, id, s.rank);
  });
  if (init.wait_for(std::chrono::duration<double>(s.timeout_s)) != std::future_status::ready) {
    abort_job(fmt::format("foldtron: communication error: NCCL initialization of group '{}' did not finish within "
                          "{} s on world rank {}\n  hint: every rank of the group must create it; if all did, NCCL's "
                          "bootstrap may not reach the other ranks (NCCL_DEBUG=INFO shows it; NCCL_SOCKET_IFNAME "
                          "chooses the network interface)\n",
                          s.group, s.timeout_s, world_rank()),
              2);
  }
  s.check(init.get(), "comm_init_rank");
  s.watchdog = std::thread([state = state_.get()] { state->watch(); });
}

NcclBackend::~NcclBackend() {
  state_->stop.store(true);
  if (state_->watchdog.joinable()) state_->watchdog.join();
  if (state_->comm) ncclCommDestroy(state_->comm);
}

WorkPtr NcclBackend::all_reduce(torch::Tensor tensor, ReduceOp op) {
  State& s = *state_;
  return s.run("all_reduce", {tensor}, tensor, [&](cudaStream_t stream) {
    s.check(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                          nccl_type(tensor.scalar_type()), nccl_op(op), s.comm, stream),
            "all_reduce");
  });
}

WorkPtr NcclBackend::broadcast(torch::Tensor tensor, int root) {
  State& s = *state_;
  return s.run("broadcast", {tensor}, tensor, [&](cudaStream_t stream) {
    s.check(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                          nccl_type(tensor.scalar_type()), root, s.comm, stream),
            "broadcast");
  });
}

WorkPtr NcclBackend::all_gather(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows) {
  State& s = *state_;
  const bool equal = std::all_of(rows.begin(), rows.end(), [&](int64_t r) { return r == rows[0]; });
  const int64_t row = row_elements(output);
  const ncclDataType_t type = nccl_type(input.scalar_type());
  const size_t element = static_cast<size_t>(input.element_size());
  return s.run("all_gather", {input, output}, output, [&](cudaStream_t stream) {
    if (equal) {
      s.check(ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()), type, s.comm,
                            stream),
              "all_gather");
      return;
    }
    // Unequal rows: one broadcast from each rank into its slice of the output.
    s.check(ncclGroupStart(), "group_start");
    int64_t offset = 0;
    for (int r = 0; r < s.size; ++r) {
      char* slice = static_cast<char*>(output.data_ptr()) + static_cast<size_t>(offset * row) * element;
      s.check(ncclBroadcast(r == s.rank ? input.data_ptr() : slice, slice, static_cast<size_t>(rows[r] * row), type,
                            r, s.comm, stream),
              "all_gather (broadcast)");
      offset += rows[r];
    }
    s.check(ncclGroupEnd(), "group_end");
  });
}

WorkPtr NcclBackend::reduce_scatter(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows,
                                    ReduceOp op) {
  State& s = *state_;
  const bool equal = std::all_of(rows.begin(), rows.end(), [&](int64_t r) { return r == rows[0]; });
  const int64_t row = row_elements(input);
  const ncclDataType_t type = nccl_type(input.scalar_type());
  const size_t element = static_cast<size_t>(input.element_size());
  return s.run("reduce_scatter", {input, output}, output, [&](cudaStream_t stream) {
    if (equal) {
      s.check(ncclReduceScatter(input.data_ptr(), output.data_ptr(), static_cast<size_t>(output.numel()), type,
                                nccl_op(op), s.comm, stream),
              "reduce_scatter");
      return;
    }
    // Unequal rows: one reduce to each rank of its slice.
    s.check(ncclGroupStart(), "group_start");
    int64_t offset = 0;
    for (int r = 0; r < s.size; ++r) {
      const char* slice = static_cast<const char*>(input.data_ptr()) + static_cast<size_t>(offset * row) * element;
      s.check(ncclReduce(slice, r == s.rank ? output.data_ptr() : nullptr, static_cast<size_t>(rows[r] * row), type,
                         nccl_op(op), r, s.comm, stream),
              "reduce_scatter (reduce)");
      offset += rows[r];
    }
    s.check(ncclGroupEnd(), "group_end");
  });
}

WorkPtr NcclBackend::all_to_all(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& input_rows,
                                const std::vector<int64_t>& output_rows) {
  State& s = *state_;
  const int64_t row = row_elements(input);
  const ncclDataType_t type = nccl_type(input.scalar_type());
  const size_t element = static_cast<size_t>(input.element_size());
  return s.run("all_to_all", {input, output}, output, [&](cudaStream_t stream) {
    s.check(ncclGroupStart(), "group_start");
    int64_t send_offset = 0;
    int64_t recv_offset = 0;
    for (int r = 0; r < s.size; ++r) {
      if (input_rows[r] > 0) {
        s.check(ncclSend(static_cast<const char*>(input.data_ptr()) + static_cast<size_t>(send_offset * row) * element,
                         static_cast<size_t>(input_rows[r] * row), type, r, s.comm, stream),
                "all_to_all (send)");
      }
      if (output_rows[r] > 0) {
        s.check(ncclRecv(static_cast<char*>(output.data_ptr()) + static_cast<size_t>(recv_offset * row) * element,
                         static_cast<size_t>(output_rows[r] * row), type, r, s.comm, stream),
                "all_to_all (recv)");
      }
      send_offset += input_rows[r];
      recv_offset += output_rows[r];
    }
    s.check(ncclGroupEnd(), "group_end");
  });
}

// NCCL has no tags: point-to-point messages between two ranks match in the order they are issued.
WorkPtr NcclBackend::batch_p2p(const std::vector<P2POp>& ops, int /*tag*/) {
  State& s = *state_;
  std::vector<torch::Tensor> tensors;
  for (const P2POp& op : ops) tensors.push_back(op.tensor);
  return s.run("batch_p2p", tensors, torch::Tensor(), [&](cudaStream_t stream) {
    s.check(ncclGroupStart(), "group_start");
    for (const P2POp& op : ops) {
      const auto count = static_cast<size_t>(op.tensor.numel());
      const ncclDataType_t type = nccl_type(op.tensor.scalar_type());
      s.check(op.send ? ncclSend(op.tensor.data_ptr(), count, type, op.peer, s.comm, stream)
                      : ncclRecv(op.tensor.data_ptr(), count, type, op.peer, s.comm, stream),
              op.send ? "batch_p2p (send)" : "batch_p2p (recv)");
    }
    s.check(ncclGroupEnd(), "group_end");
  });
}

void NcclBackend::barrier() {
  // A one-element all-reduce, then the host waits for it.
  torch::Tensor token = torch::zeros({1}, torch::TensorOptions().device(torch::kCUDA, state_->device));
  all_reduce(token, ReduceOp::kSum)->wait();
  c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(state_->device)).synchronize();
}

}  // namespace foldtron
