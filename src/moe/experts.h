// The routed experts of one MoE layer on this rank: experts [ep_rank * E/ep, (ep_rank+1) * E/ep)
// of the layer, each a SwiGLU FFN down(silu(gate(x)) * up(x)) whose FFN dimension F is split
// over etp (every etp rank holds F/etp columns of gate/up and rows of down; the outputs are
// partial sums over etp, reduced by the dispatcher's combine).
//
// Input: the tokens of each local expert one after another, [R, h] with counts[e] rows for local
// expert e; output [R, h] in the same order.
//
// GroupedExperts holds the weights stacked like Hugging Face's fused experts (names are the
// checkpoint keys):
//   gate_up_proj [E/ep, 2F/etp, h]  rows: this rank's F/etp gate rows, then its F/etp up rows
//   down_proj    [E/ep, h, F/etp]
// and runs one grouped GEMM per projection (at::_grouped_mm for bf16 on CUDA with torch >= 2.8),
// else a loop over the experts; between them the SwiGLU of the gate|up product is one fused
// CUDA kernel each way (moe/swiglu_cuda.h) for bf16 on the GPU. There, when the optimizer's
// buffers take a weight's gradient (MainGradWriter), its gradient goes straight into the main
// gradient (gradient-accumulation fusion) instead of a bf16 grouped GEMM that the buffers then
// widen or add: into fp32 ones (torch >= 2.9) one cuBLAS GEMM per expert, or, for many small
// experts on Hopper in builds with CUTLASS, one grouped GEMM (moe/grouped_wgrad_cuda.h); into bf16
// ones (train.main_grads_dtype) one cuBLAS GEMM per expert. SequentialExperts is the simple reference: one gate/up/down
// weight per expert (experts.<e>.{gate,up,down}_proj), a loop, nothing fused. Both draw
// the same initial weights (per expert, from the expert's global index), so they agree.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>
#include <torch/nn/module.h>

#include "layers/context.h"

namespace foldtron {

// How many rows each local expert has. Counts given on the host (padded slots, tests) reach the
// device when its row ends are first asked for. Counts made on the device (every dispatch by the
// routing map) start their copy to the host and do not wait for it; whoever needs them on the host
// first (an exchange over ep before its all-to-all, the per-expert loops, backward's weight
// gradients) waits for that copy alone. Dropless, without padding and with grouped bf16 experts
// on CUDA, only backward reads them, long after the copy is done: no host sync in the forward
// pass. Copies of an ExpertCounts share one state.
class ExpertCounts {
 public:
  ExpertCounts();
  ExpertCounts(std::vector<int64_t> host);  // implicit: a host vector is such counts
  // counts [E] int64 on any device; `total` (>= 0) the sum they must have, checked on the host read.
  static ExpertCounts from_device(const torch::Tensor& counts, int64_t total = -1);
  int64_t size() const;
  const std::vector<int64_t>& host() const;
  // [E] int32 cumulative row ends on `device`, as grouped GEMMs take them (made once).
  torch::Tensor row_ends(const torch::Device& device) const;
  // An autograd context's saved_data holds IValues.
  c10::IValue to_ivalue() const;
  static ExpertCounts from_ivalue(const c10::IValue& value);

 private:
  struct State;
  explicit ExpertCounts(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

// How this build writes the experts' weight gradients into fp32 main gradients (`foldtron info`;
// bf16 ones always take a cuBLAS GEMM per expert).
std::string expert_wgrad_kernel();

// silu(gate) * up of a [c, 2F] gate|up product (gate columns first), differentiable. Contiguous
// bf16 on CUDA runs the fused kernels, which save only the product for backward; anything
// else, torch's operations.
torch::Tensor swiglu(const torch::Tensor& gate_up);

// y = x weight[e]^T for the rows of each expert e (counts[e] rows each, in order), weight
// [E, N, K]: grouped GEMMs for bf16 on CUDA, whose weight gradient goes straight into the
// main gradient when `registry` has a MainGradWriter that takes `weight`; a loop over the experts
// otherwise. `registry` may be null.
torch::Tensor grouped_linear(const torch::Tensor& x, const torch::Tensor& weight, const ExpertCounts& counts,
                             const ParamRegistry* registry);

// Where this rank's experts sit: the experts and their FFN shard.
struct ExpertShard {
  int64_t local_experts = 0;  // E/ep
  int64_t first_expert = 0;   // ep_rank * E/ep
  int64_t num_experts = 0;    // E
  int64_t etp_rank = 0, etp_size = 1;
};

class Experts : public torch::nn::Module {
 public:
  // x [R, h], counts [E/ep] rows per local expert -> [R, h] partial over etp.
  virtual torch::Tensor forward(const torch::Tensor& x, const ExpertCounts& counts) = 0;

  // Recompute the activation and the output projection in backward (model.recompute moe_act):
  // only the gate|up product is kept. The grouped experts honour it; the sequential reference
  // does not.
  bool recompute_act = false;
};

class GroupedExperts : public Experts {
 public:
  GroupedExperts(const LayerContext& ctx, const std::string& name, const ExpertShard& shard, int64_t hidden,
                 int64_t ffn, double init_std);
  torch::Tensor forward(const torch::Tensor& x, const ExpertCounts& counts) override;

  torch::Tensor gate_up_proj;  // [E/ep, 2F/etp, h]
  torch::Tensor down_proj;     // [E/ep, h, F/etp]

 private:
  const ParamRegistry* registry_ = nullptr;  // main-gradient slots (gradient-accumulation fusion)
};

class SequentialExperts : public Experts {
 public:
  SequentialExperts(const LayerContext& ctx, const std::string& name, const ExpertShard& shard, int64_t hidden,
                    int64_t ffn, double init_std);
  torch::Tensor forward(const torch::Tensor& x, const ExpertCounts& counts) override;

  struct Weights {
    torch::Tensor gate, up, down;  // [F/etp, h], [F/etp, h], [h, F/etp]
  };
  std::vector<Weights> experts;
};

// The full (unsplit) initial weights of expert `e` of layer `name`: gate [F, h], up [F, h],
// down [h, F], the same in every layout.
struct ExpertInit {
  torch::Tensor gate, up, down;
};
ExpertInit expert_init(const LayerContext& ctx, const std::string& name, int64_t e, int64_t hidden, int64_t ffn,
                       double init_std);

// The layout of the stacked parameters (tp_split_dim 1 with 2 parts for gate_up, 2 for down).
ParamInfo gate_up_info(const ExpertShard& shard);
ParamInfo down_info(const ExpertShard& shard);

}  // namespace foldtron
