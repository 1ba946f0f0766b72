// The MPI implementation of CommBackend (CPU tensors); see mpi_backend.cpp.
#pragma once

#include <string>

#include "parallel/communicator.h"

namespace foldtron {

class MpiWork;

class MpiBackend : public CommBackend {
 public:
  MpiBackend(MPI_Comm comm, std::string group, double timeout_s);
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
  // Posts one non-blocking send (or receive) of `tensor` into `work`.
  void post(MpiWork& work, bool send, const torch::Tensor& tensor, int peer, int tag, const char* op);

  MPI_Comm comm_;
  std::string group_;
  double timeout_s_;
  int size_ = 1;
};

}  // namespace foldtron
