// MPI backend of the Communicator: non-blocking MPI collectives on CPU tensors, completed by
// polling MPI_Testall until done or until the group's timeout (then CommError naming the op).
// 16-bit floats travel as 16-bit words; their reductions run in fp32 and are rounded back once.
#include "parallel/mpi_backend.h"

#include <chrono>
#include <climits>
#include <functional>
#include <thread>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/fault.h"
#include "parallel/mpi_runtime.h"

namespace foldtron {
namespace {

bool is_16bit_float(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf;
}

MPI_Datatype mpi_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return MPI_FLOAT;
    case torch::kDouble: return MPI_DOUBLE;
    case torch::kInt: return MPI_INT32_T;
    case torch::kLong: return MPI_INT64_T;
    case torch::kShort: return MPI_INT16_T;
    case torch::kChar: return MPI_INT8_T;
    case torch::kByte:
    case torch::kBool: return MPI_UINT8_T;
    case torch::kBFloat16:
    case torch::kHalf: return MPI_UINT16_T;  // moved as raw words; never reduced as such
    default:
      throw CommError(fmt::format("the MPI backend cannot move tensors of dtype {}", c10::toString(type)),
                      "use fp32, fp64, bf16, fp16, int8/16/32/64, uint8 or bool");
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;  // average = sum, then divided on completion
    case ReduceOp::kMax: return MPI_MAX;
  }
  return MPI_SUM;
}

int to_count(int64_t elements, const char* operation, const std::string& group) {
  if (elements > INT_MAX) {
    throw CommError(fmt::format("MPI {} on group '{}': {} elements exceed MPI's int counts", operation, group, elements),
                    "split the message, or use the NCCL backend (CUDA tensors) for messages this large");
  }
  return static_cast<int>(elements);
}

// Completes a reduction into `result` from the buffer MPI reduced into: divides for averages
// (MPI has no average) and copies back when the buffer was an fp32 or separate staging copy.
void finish_reduction(torch::Tensor result, torch::Tensor reduced, ReduceOp op, int size) {
  if (op == ReduceOp::kAvg) {
    if (reduced.is_floating_point()) {
      reduced.div_(size);
    } else {
      reduced.div_(size, "trunc");
    }
  }
  if (!reduced.is_same(result)) result.copy_(reduced);
}

}  // namespace

// A posted MPI operation (declared in mpi_backend.h for MpiBackend::post).
class MpiWork : public Work {
 public:
  MpiWork(std::string operation, std::string group, double timeout_s, torch::Tensor result)
      : operation_(std::move(operation)), group_(std::move(group)), timeout_s_(timeout_s),
        result_(std::move(result)) {
    fault_at(operation_.c_str());
  }

  std::vector<MPI_Request> requests;
  std::vector<int> counts_a, displs_a, counts_b, displs_b;  // kept alive until completion
  torch::Tensor staging;                                      // fp32 copy for 16-bit reductions
  std::vector<torch::Tensor> keep_alive;                      // a batch's tensors, until it completes
  std::function<void()> on_complete;

  torch::Tensor wait() override {
    if (!done_) {
      poll();
      if (on_complete) on_complete();
      done_ = true;
    }
    return result_;
  }

 private:
  void poll() {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const WaitScope waiting(operation_.c_str(), group_);
    int spins = 0;
    while (true) {
      int flag = 0;
      mpi_check(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &flag, MPI_STATUSES_IGNORE),
                operation_.c_str(), group_);
      if (flag) return;
      // Spin briefly, then back off: ranks may share cores (oversubscribed CPU runs).
      if (++spins > 64) {
        std::this_thread::sleep_for(std::chrono::microseconds(std::min(spins, 1000)));
        const double waited = std::chrono::duration<double>(clock::now() - start).count();
        if (waited > timeout_s_) {
          int rank = 0;
          MPI_Comm_rank(MPI_COMM_WORLD, &rank);
          throw CommError(fmt::format("MPI {} on group '{}' did not finish within {} s on world rank {}", operation_,
                                      group_, timeout_s_, rank),
                          "another rank of the group failed or never reached this collective; its log names the "
                          "cause (raise parallel.timeout_s for very slow steps)");
        }
      } else {
        std::this_thread::yield();
      }
    }
  }

  std::string operation_;
  std::string group_;
  double timeout_s_;
  torch::Tensor result_;
  bool done_ = false;
};

namespace {

void displacements(const std::vector<int64_t>& rows, int64_t row_elems, const char* op, const std::string& group,
                   std::vector<int>& counts, std::vector<int>& displs) {
  counts.clear();
  displs.clear();
  int64_t offset = 0;
  for (int64_t r : rows) {
    counts.push_back(to_count(r * row_elems, op, group));
    displs.push_back(to_count(offset, op, group));
    offset += r * row_elems;
  }
  to_count(offset, op, group);
}

}  // namespace

MpiBackend::MpiBackend(MPI_Comm comm, std::string group, double timeout_s)
    : comm_(comm), group_(std::move(group)), timeout_s_(timeout_s) {
  MPI_Comm_size(comm_, &size_);
}

WorkPtr MpiBackend::all_reduce(torch::Tensor tensor, ReduceOp op) {
  auto work = std::make_unique<MpiWork>("all_reduce", group_, timeout_s_, tensor);
  torch::Tensor buffer = is_16bit_float(tensor) ? tensor.to(torch::kFloat) : tensor;
  work->staging = buffer;
  work->requests.resize(1);
  mpi_check(MPI_Iallreduce(MPI_IN_PLACE, buffer.data_ptr(), to_count(buffer.numel(), "all_reduce", group_),
                           mpi_type(buffer.scalar_type()), mpi_op(op), comm_, &work->requests[0]),
            "all_reduce", group_);
  const int size = size_;
  work->on_complete = [tensor, buffer, op, size] { finish_reduction(tensor, buffer, op, size); };
  return work;
}

WorkPtr MpiBackend::broadcast(torch::Tensor tensor, int root) {
  auto work = std::make_unique<MpiWork>("broadcast", group_, timeout_s_, tensor);
  work->requests.resize(1);
  mpi_check(MPI_Ibcast(tensor.data_ptr(), to_count(tensor.numel(), "broadcast", group_),
                       mpi_type(tensor.scalar_type()), root, comm_, &work->requests[0]),
            "broadcast", group_);
  return work;
}

WorkPtr MpiBackend::all_gather(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows) {
  auto work = std::make_unique<MpiWork>("all_gather", group_, timeout_s_, output);
  const int64_t row_elems = row_elements(output);
  displacements(rows, row_elems, "all_gather", group_, work->counts_a, work->displs_a);
  const MPI_Datatype type = mpi_type(input.scalar_type());
  work->requests.resize(1);
  mpi_check(MPI_Iallgatherv(input.data_ptr(), to_count(input.numel(), "all_gather", group_), type, output.data_ptr(),
                            work->counts_a.data(), work->displs_a.data(), type, comm_, &work->requests[0]),
            "all_gather", group_);
  return work;
}

WorkPtr MpiBackend::reduce_scatter(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows,
                                   ReduceOp op) {
  auto work = std::make_unique<MpiWork>("reduce_scatter", group_, timeout_s_, output);
  const int64_t row_elems = row_elements(input);
  displacements(rows, row_elems, "reduce_scatter", group_, work->counts_a, work->displs_a);
  const bool upcast = is_16bit_float(input);
  torch::Tensor send = upcast ? input.to(torch::kFloat) : input;
  torch::Tensor receive = upcast ? torch::empty(output.sizes(), output.options().dtype(torch::kFloat)) : output;
  work->staging = send;
  work->requests.resize(1);
  mpi_check(MPI_Ireduce_scatter(send.data_ptr(), receive.data_ptr(), work->counts_a.data(),
                                mpi_type(send.scalar_type()), mpi_op(op), comm_, &work->requests[0]),
            "reduce_scatter", group_);
  const int size = size_;
  work->on_complete = [output, receive, op, size] { finish_reduction(output, receive, op, size); };
  return work;
}

WorkPtr MpiBackend::all_to_all(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& input_rows,
                               const std::vector<int64_t>& output_rows) {
  auto work = std::make_unique<MpiWork>("all_to_all", group_, timeout_s_, output);
  const int64_t row_elems = row_elements(input);
  displacements(input_rows, row_elems, "all_to_all", group_, work->counts_a, work->displs_a);
  displacements(output_rows, row_elems, "all_to_all", group_, work->counts_b, work->displs_b);
  const MPI_Datatype type = mpi_type(input.scalar_type());
  work->requests.resize(1);
  mpi_check(MPI_Ialltoallv(input.data_ptr(), work->counts_a.data(), work->displs_a.data(), type, output.data_ptr(),
                           work->counts_b.data(), work->displs_b.data(), type, comm_, &work->requests[0]),
            "all_to_all", group_);
  return work;
}

void MpiBackend::post(MpiWork& work, bool send, const torch::Tensor& tensor, int peer, int tag, const char* op) {
  work.requests.emplace_back();
  const int count = to_count(tensor.numel(), op, group_);
  const MPI_Datatype type = mpi_type(tensor.scalar_type());
  mpi_check(send ? MPI_Isend(tensor.data_ptr(), count, type, peer, tag, comm_, &work.requests.back())
                 : MPI_Irecv(tensor.data_ptr(), count, type, peer, tag, comm_, &work.requests.back()),
            op, group_);
}

WorkPtr MpiBackend::batch_p2p(const std::vector<P2POp>& ops, int tag) {
  auto work = std::make_unique<MpiWork>("batch_p2p", group_, timeout_s_, torch::Tensor());
  for (const P2POp& op : ops) {  // receives first: each send then finds its match posted
    if (!op.send) post(*work, false, op.tensor, op.peer, tag, "batch_p2p (recv)");
  }
  for (const P2POp& op : ops) {
    if (op.send) post(*work, true, op.tensor, op.peer, tag, "batch_p2p (send)");
  }
  for (const P2POp& op : ops) work->keep_alive.push_back(op.tensor);
  return work;
}

void MpiBackend::barrier() {
  MpiWork work("barrier", group_, timeout_s_, torch::Tensor());
  work.requests.resize(1);
  mpi_check(MPI_Ibarrier(comm_, &work.requests[0]), "barrier", group_);
  work.wait();
}

}  // namespace foldtron
