// One forward pass of a batch through a model in any layout, as `foldtron forward` and the
// Hugging Face parity tests run it. The batch's B sequences are split over dp (contiguous,
// sizes differing by at most one); a dp rank without a sequence runs a copy of sequence 0 with
// weight 0, so it still takes part in every collective. With pipeline parallelism the batch
// passes the stages as one micro-batch (forward only). Outputs are gathered to every rank.
#pragma once

#include <vector>

#include <torch/types.h>

namespace foldtron {

class DecoderLM;
class ProcessGroups;

struct ForwardResult {
  torch::Tensor logits;                      // [B, S, V] fp32, every rank
  std::vector<torch::Tensor> hidden_states;  // L + 1 of [B, S, h] (when asked), every rank
  torch::Tensor loss;                        // scalar: this rank's share of the mean next-token
                                             // cross-entropy (shares sum over dp); differentiable
                                             // without pipeline parallelism, undefined before the
                                             // last stage
  double loss_value = 0;                     // the mean over all B * (S - 1) predictions
};

// ids [B, S] int64 (any device). Collective over every group of `groups`.
ForwardResult forward_batch(DecoderLM& model, ProcessGroups& groups, const torch::Tensor& ids, torch::Device device,
                            bool sequence_parallel, bool hidden_states);

}  // namespace foldtron
