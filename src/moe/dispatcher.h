// Token dispatchers: move each routed (token, expert) copy from the rank that routed it to the
// ranks that hold the expert, and the expert outputs back (Megatron-Core's all-gather and
// all-to-all dispatchers, written from their description). Both run over the etp_ep group;
// dispatch and combine are separate calls so later work can overlap them with compute.
//
// All-gather: every rank of etp_ep gathers all tokens [N, h] and routings of the group (variable
// rows), keeps the copies routed to its local experts (sorted by expert), and on combine
// weights the expert outputs, sums them into [N, h] and reduce-scatters back to its own [n, h]
// (which also sums the etp partial outputs).
//
// All-to-all: each rank sorts its copies by expert ([P, h]), exchanges them over ep with variable
// splits (every rank learns every rank's per-expert counts first: one host sync per layer, none
// with pad_to_capacity; a group of one rank exchanges nothing, and dropless without padding it
// reads no counts either), all-gathers over etp (the etp ranks share experts but routed different
// tokens), and sorts the chunks (etp rank, source ep rank, local expert) by local expert. Combine
// is the exact reverse: unsort, reduce-scatter over etp (summing the partial outputs), all-to-all
// back, weight by the routing weights and sum each token's copies.
//
// Experts or ranks with zero tokens are fine on both paths (empty splits, empty chunks).
#pragma once

#include <memory>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "moe/experts.h"
#include "moe/router.h"

namespace foldtron {

class ProcessGroups;

// Copies of tokens in expert order: which rows of a token tensor, their routing weights, and how
// many rows each expert has.
struct Permutation {
  torch::Tensor token_index;  // [P] int64
  torch::Tensor weights;      // [P] routing weights (differentiable)
  ExpertCounts counts;        // [experts] rows per expert
  // [n, k] int64: the rows of each token's k copies, when every token has k (dropless routing
  // over all experts); then dispatch and combine are gathers both ways, without index_add.
  torch::Tensor rows_of_token;
};

// Copies of routing_map [n, E'] (true: routed) sorted by expert, then token; weights from
// probs [n, E']. `copies_per_token` > 0: the map routes every token to that many experts
// (dropless, all experts), so rows_of_token is filled, the number of copies is known without a
// host sync (the counts reach the host later, ExpertCounts) and the rows are placed by running
// counts, without a sort; 0: one host sync (the counts) and a sort.
Permutation permute_by_map(const torch::Tensor& routing_map, const torch::Tensor& probs, int64_t copies_per_token = 0);
// Copies of pad_to_capacity slots [E', cap] (valid [E', cap]); padding slots weigh 0. No host sync.
Permutation permute_by_slots(const torch::Tensor& slots, const torch::Tensor& valid, const torch::Tensor& probs);

// The weighted sum of each token's copies, differentiable in rows and weights: out [n, h] with
// out[t] = sum over j of weights[r] * rows[r], r = rows_of_token[t, j] (token_index [P] maps each
// row back to its token). On CUDA (bf16 or fp32 rows) one kernel each way (moe/combine_cuda.h);
// elsewhere, or with `use_kernels` false, torch's operations (what the kernels are tested and
// timed against).
torch::Tensor weighted_sum_copies(const torch::Tensor& rows, const torch::Tensor& weights,
                                  const torch::Tensor& token_index, const torch::Tensor& rows_of_token,
                                  bool use_kernels = true);

// What combine needs to send a dispatch's rows back (each dispatcher its own kind).
struct DispatchState {
  virtual ~DispatchState() = default;
};

struct Dispatched {
  torch::Tensor tokens;  // [R, h] sorted by local expert
  ExpertCounts counts;   // [E/ep] rows per local expert
  std::shared_ptr<const DispatchState> state;
};

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  // hidden [n, h] this rank's tokens -> the tokens of this rank's experts.
  virtual Dispatched dispatch(const torch::Tensor& hidden, const Routing& routing) = 0;
  // expert outputs [R, h] (partial over etp) of `dispatched` -> [n, h] the weighted sum over each
  // token's experts.
  virtual torch::Tensor combine(const torch::Tensor& expert_output, const Dispatched& dispatched) = 0;
};

std::unique_ptr<TokenDispatcher> make_dispatcher(Dispatcher kind, ProcessGroups& groups, const ExpertShard& shard);

}  // namespace foldtron
