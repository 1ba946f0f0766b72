// The NCCL implementation of CommBackend (CUDA tensors), compiled only with FOLDTRON_WITH_CUDA.
// Operations run on a dedicated communication stream of the group, ordered after the work
// already queued on the caller's current stream by a CUDA event; Work::wait() orders the
// caller's stream after the operation (no host synchronization). The caching allocator is told
// that the tensors are used on the communication stream. A watchdog thread aborts the job when
// an operation stays unfinished past the timeout or NCCL reports an asynchronous error.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace foldtron {

class NcclBackend : public CommBackend {
 public:
  // Collective over `comm`: rank 0 creates the NCCL id and broadcasts it through MPI.
  NcclBackend(MPI_Comm comm, std::string group, double timeout_s, int device);
  ~NcclBackend() override;
  WorkPtr all_reduce(torch::Tensor tensor, ReduceOp op) override;
  WorkPtr broadcast(torch::Tensor tensor, int root) override;
  WorkPtr all_gather(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows) override;
  WorkPtr reduce_scatter(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows,
                         ReduceOp op) override;
  WorkPtr all_to_all(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& input_rows,
                     const std::vector<int64_t>& output_rows) override;
  WorkPtr batch_p2p(const std::vector<P2POp>& ops, int tag) override;
  void barrier() override;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace foldtron
