// Communicator: the collectives of one process group on torch tensors, with two backends behind
// one interface: MPI for CPU tensors and NCCL for CUDA tensors (when built with CUDA), chosen per
// call by the tensor's device. Every operation has an asynchronous form returning a Work handle
// (wait() gives the result) and a blocking form. Groups of one rank short-circuit to copies.
//
// Conventions: gathers and scatters work along dim 0 ("rows"); variable-size forms take or
// exchange the row count of every rank. Inputs may be non-contiguous; outputs are new
// contiguous tensors except for the in-place all_reduce, broadcast and recv.
//
// Every library call is checked: a failure throws CommError naming the operation, the group,
// the rank and the library's message; a collective that does not finish within the group's
// timeout throws CommError naming it (and, for NCCL, aborts the communicator).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <mpi.h>
#include <torch/types.h>

namespace foldtron {

enum class ReduceOp { kSum, kAvg, kMax };

// A pending operation. wait() blocks until its result may be used (on a GPU: until the current
// stream is ordered after it) and returns the result tensor.
class Work {
 public:
  virtual ~Work() = default;
  virtual torch::Tensor wait() = 0;
};
using WorkPtr = std::unique_ptr<Work>;

// One send or receive of a batch posted together (Communicator::batch_p2p_async).
struct P2POp {
  bool send = true;
  torch::Tensor tensor;  // sent, or received into (contiguous)
  int peer = 0;
};

// One library's implementation for one group. Tensors handed in are contiguous and outputs are
// preallocated by the Communicator; counts are in rows of `row_elements` elements.
class CommBackend {
 public:
  virtual ~CommBackend() = default;
  virtual WorkPtr all_reduce(torch::Tensor tensor, ReduceOp op) = 0;
  virtual WorkPtr broadcast(torch::Tensor tensor, int root) = 0;
  virtual WorkPtr all_gather(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows) = 0;
  virtual WorkPtr reduce_scatter(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& rows,
                                 ReduceOp op) = 0;
  virtual WorkPtr all_to_all(torch::Tensor input, torch::Tensor output, const std::vector<int64_t>& input_rows,
                             const std::vector<int64_t>& output_rows) = 0;
  // Sends and receives posted together (they may cross: peers send to each other); a single
  // send or receive is a batch of one.
  virtual WorkPtr batch_p2p(const std::vector<P2POp>& ops, int tag) = 0;
  virtual void barrier() = 0;
};

struct CommOptions {
  double timeout_s = 600.0;   // a collective stalled longer than this is an error
  int cuda_device = -1;       // CUDA device of this rank; -1: CPU only
};

class Communicator {
 public:
  // `comm` is this group's MPI communicator (owned: freed on destruction); `world_ranks` are the
  // group's members in group-rank order.
  Communicator(std::string name, MPI_Comm comm, std::vector<int64_t> world_ranks, CommOptions options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  const std::string& name() const { return name_; }
  int rank() const { return rank_; }  // rank within the group
  int size() const { return static_cast<int>(world_ranks_.size()); }
  const std::vector<int64_t>& world_ranks() const { return world_ranks_; }
  MPI_Comm mpi_comm() const { return comm_; }
  double timeout_s() const { return options_.timeout_s; }

  // ---- asynchronous ----
  WorkPtr all_reduce_async(torch::Tensor tensor, ReduceOp op = ReduceOp::kSum);  // in place
  WorkPtr broadcast_async(torch::Tensor tensor, int root);                       // in place
  // Concatenation of every rank's input along dim 0; inputs must have equal shapes.
  WorkPtr all_gather_async(const torch::Tensor& input);
  // Same with rank i contributing rows[i] rows (rows[rank()] == input.size(0)).
  WorkPtr all_gather_async(const torch::Tensor& input, const std::vector<int64_t>& rows);
  // Equal shapes, into `output` (contiguous, size() x input's rows; it must not overlap input).
  WorkPtr all_gather_into_async(const torch::Tensor& input, torch::Tensor output);
  // Reduction of every rank's input, of which this rank keeps rows [offset, offset+rows[rank()]).
  WorkPtr reduce_scatter_async(const torch::Tensor& input, ReduceOp op = ReduceOp::kSum);  // equal split
  WorkPtr reduce_scatter_async(const torch::Tensor& input, const std::vector<int64_t>& rows,
                               ReduceOp op = ReduceOp::kSum);
  // Rank i sends input rows [sum(input_rows[:j]), +input_rows[j]) to rank j and receives
  // output_rows[j] rows from rank j, concatenated in rank order.
  WorkPtr all_to_all_async(const torch::Tensor& input, const std::vector<int64_t>& input_rows,
                           const std::vector<int64_t>& output_rows);
  WorkPtr send_async(const torch::Tensor& tensor, int peer, int tag = 0);
  WorkPtr recv_async(torch::Tensor tensor, int peer, int tag = 0);  // into `tensor`
  // Send to one peer and receive from another (or the same) as one operation; returns `recv`.
  // Use it whenever two ranks exchange in both directions: on NCCL, separate send and recv
  // calls run in issue order on the group's stream, so crossing ones would wait on each other.
  WorkPtr send_recv_async(const torch::Tensor& send, int send_peer, torch::Tensor recv, int recv_peer, int tag = 0);
  // Any sends and receives as one operation (on NCCL one group call), completed together; the
  // pipeline posts each step's exchanges with both neighbours this way. wait() returns nothing.
  WorkPtr batch_p2p_async(const std::vector<P2POp>& ops, int tag = 0);

  // ---- blocking ----
  void all_reduce(torch::Tensor tensor, ReduceOp op = ReduceOp::kSum) { all_reduce_async(tensor, op)->wait(); }
  void broadcast(torch::Tensor tensor, int root) { broadcast_async(tensor, root)->wait(); }
  torch::Tensor all_gather(const torch::Tensor& input) { return all_gather_async(input)->wait(); }
  torch::Tensor all_gather(const torch::Tensor& input, const std::vector<int64_t>& rows) {
    return all_gather_async(input, rows)->wait();
  }
  // Variable rows, not known beforehand: exchanges every rank's row count first (a host sync).
  torch::Tensor all_gather_v(const torch::Tensor& input);
  torch::Tensor reduce_scatter(const torch::Tensor& input, ReduceOp op = ReduceOp::kSum) {
    return reduce_scatter_async(input, op)->wait();
  }
  torch::Tensor reduce_scatter(const torch::Tensor& input, const std::vector<int64_t>& rows,
                               ReduceOp op = ReduceOp::kSum) {
    return reduce_scatter_async(input, rows, op)->wait();
  }
  torch::Tensor all_to_all(const torch::Tensor& input, const std::vector<int64_t>& input_rows,
                           const std::vector<int64_t>& output_rows) {
    return all_to_all_async(input, input_rows, output_rows)->wait();
  }
  void send(const torch::Tensor& tensor, int peer, int tag = 0) { send_async(tensor, peer, tag)->wait(); }
  void recv(torch::Tensor tensor, int peer, int tag = 0) { recv_async(tensor, peer, tag)->wait(); }
  void barrier();
  // Every rank's value of a small integer list (host side, through MPI).
  std::vector<std::vector<int64_t>> all_gather_ints(const std::vector<int64_t>& values);

 private:
  CommBackend& backend_for(const torch::Tensor& tensor);
  void check_peer(int peer, const char* operation) const;

  std::string name_;
  MPI_Comm comm_;
  std::vector<int64_t> world_ranks_;
  CommOptions options_;
  int rank_ = 0;
  std::unique_ptr<CommBackend> mpi_;
  std::unique_ptr<CommBackend> nccl_;  // created on first CUDA use (collective over the group)
};

const char* reduce_op_name(ReduceOp op);

// Elements per row of dim 0: the product of the trailing sizes (1 for a 1-d tensor).
int64_t row_elements(const torch::Tensor& tensor);

}  // namespace foldtron
