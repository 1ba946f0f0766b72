// The Communicator facade (see communicator.h): argument checks, output allocation, contiguity,
// one-rank shortcuts, and the choice of backend by the tensor's device.
#include "parallel/communicator.h"

#include <functional>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/math.h"
#include "core/torch_compat.h"
#include "parallel/mpi_backend.h"
#include "parallel/mpi_runtime.h"
#ifdef FOLDTRON_WITH_CUDA
#include "parallel/nccl_backend.h"
#endif

namespace foldtron {
namespace {

// A result that is already there.
class ReadyWork : public Work {
 public:
  explicit ReadyWork(torch::Tensor result) : result_(std::move(result)) {}
  torch::Tensor wait() override { return result_; }

 private:
  torch::Tensor result_;
};

// Runs `finish` on the inner result once it completes (e.g. copy back into a strided tensor).
class ThenWork : public Work {
 public:
  ThenWork(WorkPtr inner, std::function<torch::Tensor(torch::Tensor)> finish)
      : inner_(std::move(inner)), finish_(std::move(finish)) {}
  torch::Tensor wait() override {
    if (!done_) {
      result_ = finish_(inner_->wait());
      done_ = true;
    }
    return result_;
  }

 private:
  WorkPtr inner_;
  std::function<torch::Tensor(torch::Tensor)> finish_;
  torch::Tensor result_;
  bool done_ = false;
};

// Runs an in-place operation on `tensor`: directly when contiguous, else on a contiguous copy
// whose result is copied back into the strided tensor on completion.
WorkPtr in_place(torch::Tensor tensor, const std::function<WorkPtr(torch::Tensor)>& launch) {
  if (tensor.is_contiguous()) return launch(tensor);
  return std::make_unique<ThenWork>(launch(tensor.contiguous()), [tensor](torch::Tensor result) mutable {
    tensor.copy_(result);
    return tensor;
  });
}

std::vector<int64_t> with_rows(const torch::Tensor& like, int64_t rows) {
  std::vector<int64_t> shape = like.sizes().vec();
  shape[0] = rows;
  return shape;
}

}  // namespace

int64_t row_elements(const torch::Tensor& tensor) {
  int64_t n = 1;
  for (int64_t d = 1; d < tensor.dim(); ++d) n *= tensor.size(d);
  return n;
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
  }
  return "?";
}

Communicator::Communicator(std::string name, MPI_Comm comm, std::vector<int64_t> world_ranks, CommOptions options)
    : name_(std::move(name)), comm_(comm), world_ranks_(std::move(world_ranks)), options_(options) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  int size = 0;
  MPI_Comm_size(comm_, &size);
  FT_CHECK(size == static_cast<int>(world_ranks_.size()), "MPI communicator size differs from the group");
  mpi_ = std::make_unique<MpiBackend>(comm_, name_, options_.timeout_s);
#ifdef FOLDTRON_WITH_CUDA
  if (options_.cuda_device >= 0 && size > 1) {
    nccl_ = std::make_unique<NcclBackend>(comm_, name_, options_.timeout_s, options_.cuda_device);
  }
#endif
}

Communicator::~Communicator() {
  nccl_.reset();
  mpi_.reset();
  if (comm_ != MPI_COMM_NULL && comm_ != MPI_COMM_WORLD && mpi_active()) MPI_Comm_free(&comm_);
}

CommBackend& Communicator::backend_for(const torch::Tensor& tensor) {
  if (tensor.is_cuda()) {
    if (!nccl_) {
      throw CommError(fmt::format("group '{}' got a CUDA tensor but has no NCCL communicator", name_),
                      torch_compat::built_with_cuda() ? "create the process groups with a CUDA device (CommOptions.cuda_device)"
                                             : "this build has no CUDA paths; rebuild with a CUDA torch "
                                               "(scripts/gpu_build.sh) or keep tensors on the CPU");
    }
    return *nccl_;
  }
  return *mpi_;
}

void Communicator::check_peer(int peer, const char* operation) const {
  FT_CHECK(peer >= 0 && peer < size() && peer != rank_,
           fmt::format("{} on group '{}' to peer {} from rank {} of {}", operation, name_, peer, rank_, size()));
}

WorkPtr Communicator::all_reduce_async(torch::Tensor tensor, ReduceOp op) {
  if (size() == 1) return std::make_unique<ReadyWork>(tensor);
  return in_place(tensor, [&](torch::Tensor t) { return backend_for(t).all_reduce(t, op); });
}

WorkPtr Communicator::broadcast_async(torch::Tensor tensor, int root) {
  FT_CHECK(root >= 0 && root < size(), fmt::format("broadcast root {} on group '{}' of {}", root, name_, size()));
  if (size() == 1) return std::make_unique<ReadyWork>(tensor);
  return in_place(tensor, [&](torch::Tensor t) { return backend_for(t).broadcast(t, root); });
}

WorkPtr Communicator::all_gather_async(const torch::Tensor& input) {
  FT_CHECK(input.dim() >= 1, "all_gather needs at least one dimension");
  return all_gather_async(input, std::vector<int64_t>(static_cast<size_t>(size()), input.size(0)));
}

WorkPtr Communicator::all_gather_async(const torch::Tensor& input, const std::vector<int64_t>& rows) {
  FT_CHECK(input.dim() >= 1, "all_gather needs at least one dimension");
  FT_CHECK(static_cast<int>(rows.size()) == size() && rows[static_cast<size_t>(rank_)] == input.size(0),
           fmt::format("all_gather on group '{}': rows for {} ranks with {} here, input has {}", name_, rows.size(),
                       rows.size() > static_cast<size_t>(rank_) ? rows[static_cast<size_t>(rank_)] : -1,
                       input.size(0)));
  if (size() == 1) return std::make_unique<ReadyWork>(input.clone(at::MemoryFormat::Contiguous));
  torch::Tensor output = torch::empty(with_rows(input, sum_of(rows)), input.options());
  return backend_for(input).all_gather(input.contiguous(), output, rows);
}

WorkPtr Communicator::all_gather_into_async(const torch::Tensor& input, torch::Tensor output) {
  FT_CHECK(input.dim() >= 1 && output.is_contiguous() && output.dim() == input.dim() &&
               output.size(0) == input.size(0) * size() && output.numel() == input.numel() * size(),
           fmt::format("all_gather_into on group '{}': output of {} elements for {} ranks of {}", name_,
                       output.numel(), size(), input.numel()));
  if (size() == 1) {
    output.copy_(input);
    return std::make_unique<ReadyWork>(output);
  }
  return backend_for(input).all_gather(input.contiguous(), output,
                                       std::vector<int64_t>(static_cast<size_t>(size()), input.size(0)));
}

torch::Tensor Communicator::all_gather_v(const torch::Tensor& input) {
  std::vector<int64_t> rows;
  for (const auto& r : all_gather_ints({input.size(0)})) rows.push_back(r.at(0));
  return all_gather(input, rows);
}

WorkPtr Communicator::reduce_scatter_async(const torch::Tensor& input, ReduceOp op) {
  FT_CHECK(input.dim() >= 1 && input.size(0) % size() == 0,
           fmt::format("reduce_scatter on group '{}': {} rows do not split over {} ranks", name_,
                       input.dim() >= 1 ? input.size(0) : 0, size()));
  return reduce_scatter_async(input, std::vector<int64_t>(static_cast<size_t>(size()), input.size(0) / size()), op);
}

WorkPtr Communicator::reduce_scatter_async(const torch::Tensor& input, const std::vector<int64_t>& rows,
                                           ReduceOp op) {
  FT_CHECK(input.dim() >= 1 && static_cast<int>(rows.size()) == size() && sum_of(rows) == input.size(0),
           fmt::format("reduce_scatter on group '{}': rows for {} ranks sum to {}, input has {}", name_, rows.size(),
                       sum_of(rows), input.dim() >= 1 ? input.size(0) : 0));
  if (size() == 1) return std::make_unique<ReadyWork>(input.clone(at::MemoryFormat::Contiguous));
  torch::Tensor output = torch::empty(with_rows(input, rows[static_cast<size_t>(rank_)]), input.options());
  return backend_for(input).reduce_scatter(input.contiguous(), output, rows, op);
}

WorkPtr Communicator::all_to_all_async(const torch::Tensor& input, const std::vector<int64_t>& input_rows,
                                       const std::vector<int64_t>& output_rows) {
  FT_CHECK(input.dim() >= 1 && static_cast<int>(input_rows.size()) == size() &&
               static_cast<int>(output_rows.size()) == size() && sum_of(input_rows) == input.size(0),
           fmt::format("all_to_all on group '{}': {} input splits summing to {} for {} rows, {} output splits", name_,
                       input_rows.size(), sum_of(input_rows), input.dim() >= 1 ? input.size(0) : 0,
                       output_rows.size()));
  if (size() == 1) {
    FT_CHECK(output_rows[0] == input_rows[0], "all_to_all with one rank must keep its rows");
    return std::make_unique<ReadyWork>(input.clone(at::MemoryFormat::Contiguous));
  }
  torch::Tensor output = torch::empty(with_rows(input, sum_of(output_rows)), input.options());
  return backend_for(input).all_to_all(input.contiguous(), output, input_rows, output_rows);
}

// Single sends and receives are batches of one.
WorkPtr Communicator::send_async(const torch::Tensor& tensor, int peer, int tag) {
  return std::make_unique<ThenWork>(batch_p2p_async({{true, tensor, peer}}, tag),
                                    [tensor](const torch::Tensor&) { return tensor; });
}

WorkPtr Communicator::recv_async(torch::Tensor tensor, int peer, int tag) {
  return in_place(tensor, [&](torch::Tensor t) {
    return std::make_unique<ThenWork>(batch_p2p_async({{false, t, peer}}, tag), [t](const torch::Tensor&) { return t; });
  });
}

WorkPtr Communicator::send_recv_async(const torch::Tensor& send, int send_peer, torch::Tensor recv, int recv_peer,
                                      int tag) {
  FT_CHECK(send.device() == recv.device(), "send_recv needs both tensors on one device");
  return in_place(recv, [&](torch::Tensor t) {
    return std::make_unique<ThenWork>(batch_p2p_async({{true, send, send_peer}, {false, t, recv_peer}}, tag),
                                      [t](const torch::Tensor&) { return t; });
  });
}

WorkPtr Communicator::batch_p2p_async(const std::vector<P2POp>& ops, int tag) {
  if (ops.empty()) return std::make_unique<ReadyWork>(torch::Tensor());
  std::vector<P2POp> posted;
  for (const P2POp& op : ops) {
    check_peer(op.peer, op.send ? "send" : "recv");
    FT_CHECK(op.tensor.device() == ops.front().tensor.device(), "batch_p2p needs all tensors on one device");
    FT_CHECK(op.send || op.tensor.is_contiguous(), "batch_p2p receives into contiguous tensors");
    posted.push_back({op.send, op.send ? op.tensor.contiguous() : op.tensor, op.peer});
  }
  return backend_for(posted.front().tensor).batch_p2p(posted, tag);
}

void Communicator::barrier() {
  if (size() > 1) mpi_->barrier();
}

std::vector<std::vector<int64_t>> Communicator::all_gather_ints(const std::vector<int64_t>& values) {
  const auto count = static_cast<int64_t>(values.size());
  torch::Tensor local = torch::tensor(values, torch::kLong).reshape({1, count});
  torch::Tensor gathered = all_gather(local);  // [size, count], on the CPU through MPI
  std::vector<std::vector<int64_t>> out;
  for (int64_t r = 0; r < size(); ++r) {
    const int64_t* row = gathered.data_ptr<int64_t>() + r * count;
    out.emplace_back(row, row + count);
  }
  return out;
}

}  // namespace foldtron
