// One forward pass of a batch through a model in any layout, as `foldtron forward` and the Hugging
// Face parity tests run it. The batch's B sequences are split over dp (contiguous, sizes differing
// by at most one); a dp rank without a sequence runs a copy of sequence 0 with weight 0, so it
// still takes part in every collective. With pipeline parallelism the batch passes the stages as
// one micro-batch (forward only). Outputs are gathered to every rank.
//
// The loss: decoder-only, the mean next-token cross-entropy over the positions that are tokens and
// whose next token is one too (attention_mask 1 at both); encoder-decoder, the mean cross-entropy
// over the labels that are not -100.
#pragma once

#include <vector>

#include <torch/types.h>

namespace foldtron {

class Model;
class ProcessGroups;

struct ForwardInputs {
  torch::Tensor input_ids;          // [B, S] int64 (any device)
  torch::Tensor attention_mask;     // [B, S], 1: token, 0: padding; undefined: all tokens
  torch::Tensor decoder_input_ids;  // [B, T] (encoder-decoder)
  torch::Tensor labels;             // [B, T] (encoder-decoder), -100: ignored
  torch::Tensor languages;          // [B] int64 language ids (models with language embeddings)
  torch::Tensor decoder_languages;  // [B] the target's (encoder-decoder)
};

struct ForwardResult {
  torch::Tensor logits;                      // [B, S or T, V] fp32, every rank
  // When asked, every rank: model.num_hidden_states() of [B, S or T, h], in Hugging Face's order
  // (an encoder-decoder's encoder states first).
  std::vector<torch::Tensor> hidden_states;
  torch::Tensor loss;                        // scalar: this rank's share of the mean loss (shares
                                             // sum over dp), detached; undefined before the last stage
  double loss_value = 0;                     // the mean over the whole batch
};

// Collective over every group of `groups`. With `backward` the loss is also backpropagated through
// the pipeline (one micro-batch; not with the interleaved schedule), leaving each parameter's
// gradient of the mean loss in its .grad (or its buffer). DataError when the inputs do not fit
// the model or the layout (shapes, sequence lengths that do not split over tp or cp).
ForwardResult forward_batch(Model& model, ProcessGroups& groups, const ForwardInputs& inputs, bool hidden_states,
                            bool backward = false);

}  // namespace foldtron
