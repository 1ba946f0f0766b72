// The implicit discourse relation classifiers.
//
// baseline: the frozen pretrained encoder over [Arg1 </s> Arg2 </s>] pooled (features.h) ->
//   dropout -> a linear classifier.
// multigrained (after Bai & Zhao, COLING 2018), per argument of n words:
//   char:    characters [n, c] -> embeddings -> convolutions of each width -> max over the word
//            -> highway layers                                              [n, widths * char_channels]
//   word:    word embeddings                                                [n, word_dim]
//   context: the frozen encoder's vector of each word                       [n, hc]
//   the grains concatenated -> linear -> [n, C]; then conv_layers gated convolutions (GLU, residual);
//   after each layer, with `pair`, bi-attention between the arguments (M = X1 W X2^T [n1, n2]; each
//   argument attends to the other and adds what it read), and k-max pooling (kept in word order) of
//   each argument and of its attended read -> the layers' poolings concatenated -> linear -> tanh:
//   the pair representation z [hidden]; a linear classifier over z (with the memory, over [z; r]).
//   Auxiliary: the connective predicted from z (connective_weight).
// With the memory (memory.h): r and v read with z as the query; the relation distribution is
//   (1 - alpha) softmax(classifier) + alpha v where the read found an active slot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "config/config.h"
#include "tasks/discourse/features.h"
#include "tasks/discourse/memory.h"

namespace foldtron {

// Instances [indices] as one batch on `device` (arguments right-padded to the longest).
struct DiscourseBatch {
  torch::Tensor words1, words2;        // [b, n1], [b, n2] int64, 0: padding
  torch::Tensor chars1, chars2;        // [b, n, c] int64
  torch::Tensor context1, context2;    // [b, n, hc] fp32; undefined without
  torch::Tensor pair;                  // [b, 2 hc] fp32 (baseline); undefined without
  torch::Tensor labels;                // [b] int64: the first label
  torch::Tensor connectives;           // [b] int64, 0: none
  torch::Tensor slots;                 // [b, 2] int64: the memory slots [first, last] it must not read; -1 -1: none
  int64_t size() const { return labels.size(0); }
};

// Encoded instances packed once on the device (each argument right-padded to the set's longest),
// so that a batch is a few index_selects: no host work or copy per step but the indices.
struct EncodedSet {
  torch::Tensor words1, words2;      // [N, L1], [N, L2] int64
  torch::Tensor chars1, chars2;      // [N, L, c] int64
  torch::Tensor context1, context2;  // [N, L, hc] fp32; undefined without
  torch::Tensor pair;                // [N, 2 hc] fp32; undefined without
  torch::Tensor labels, connectives; // [N] int64 (the first label)
  torch::Tensor relation_slots;      // [N, 2] int64: the first and last instance of the same relation
  std::vector<int64_t> length1, length2;  // each argument's words (host)
  int64_t size() const { return static_cast<int64_t>(length1.size()); }
};
EncodedSet pack(const std::vector<EncodedInstance>& instances, torch::Device device);

// The instances [indices] of `set`, cut to the batch's longest arguments; with `own_slots` each
// instance excludes the memory slots of its relation (a training instance's slot is its index,
// and a relation of two senses has two adjacent instances), else none.
DiscourseBatch collate(const EncodedSet& set, const std::vector<int64_t>& indices, bool own_slots);

// The grains of discourse.grains; ConfigError naming an unknown one.
struct Grains {
  bool chars = false, words = false, context = false, pair = false;
};
Grains parse_grains(const std::string& text);

struct DiscourseSizes {
  int64_t classes = 0, words = 0, characters = 0, connectives = 0;
  int64_t context = 0;  // the encoder's width (0: none)
};

class DiscourseNetImpl : public torch::nn::Module {
 public:
  DiscourseNetImpl(const DiscourseConfig& config, const DiscourseSizes& sizes);

  // The pair representation z [b, hidden] (baseline: the pooled encoding [b, 2 hc]); local, no
  // collective. An empty batch gives [0, hidden].
  torch::Tensor represent(const DiscourseBatch& batch);
  int64_t representation_width() const { return width_; }
  // The relation log-probabilities [b, K] from z and, with the memory, its read (undefined in the
  // first epoch, before the bank is filled).
  torch::Tensor log_probs(const torch::Tensor& z, const MemoryRead* read);
  // The connective logits [b, connectives]; undefined without the auxiliary task.
  torch::Tensor connective_logits(const torch::Tensor& z);
  bool uses_memory() const { return memory_; }
  // The biaffine read's W [hidden, hidden] and u [hidden].
  const torch::Tensor& memory_w() const { return memory_w_; }
  const torch::Tensor& memory_u() const { return memory_u_; }

 private:
  torch::Tensor characters(const torch::Tensor& chars);  // [b, n, c] -> [b, n, char features]
  torch::Tensor argument_input(const torch::Tensor& words, const torch::Tensor& chars, const torch::Tensor& context);
  // Top-k of x [b, n, C] over n (masked positions excluded, missing ones 0), in word order: [b, k C].
  torch::Tensor kmax(const torch::Tensor& x, const torch::Tensor& mask) const;

  bool baseline_, memory_;
  Grains grains_;
  int64_t width_, kmax_;
  double alpha_;
  torch::nn::Embedding char_embedding_{nullptr}, word_embedding_{nullptr};
  torch::nn::ModuleList char_convs_{nullptr}, highways_{nullptr}, gated_convs_{nullptr}, attentions_{nullptr};
  torch::nn::LayerNorm pooled_norm_{nullptr};
  torch::nn::Linear input_{nullptr}, pair_{nullptr}, classifier_{nullptr}, connective_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::Tensor memory_w_, memory_u_;
};
TORCH_MODULE(DiscourseNet);

}  // namespace foldtron
