// One decoding step of a model in any layout: the step's inputs run through every pipeline stage
// (forward only, one micro-batch) with the key/value cache, and the logits of each row's last
// position come back on every rank, gathered over tp, without the vocabulary padding.
// Sequence and context parallelism are off while a runner lives (DecodingScope): each rank
// decodes whole sequences of its own rows.
#pragma once

#include <torch/types.h>

#include "layers/context.h"
#include "layers/transformer_layer.h"
#include "models/model.h"

namespace foldtron {

class ProcessGroups;

class StepRunner {
 public:
  StepRunner(Model& model, ProcessGroups& groups);
  // inputs of this step (prefill: the prompt, or the source and the start token; then one token
  // per row) -> logits [b, V] fp32 of the last position, on every rank. Appends to `cache`.
  torch::Tensor step(const ModelInputs& inputs, KVCache& cache);

 private:
  Model& model_;
  ProcessGroups& groups_;
  DecodingScope scope_;
  torch::NoGradGuard no_grad_;
};

}  // namespace foldtron
