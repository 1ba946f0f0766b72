// How foldtron's global tensors correspond to Hugging Face's, for import and export alike. Most
// tensors are one Hugging Face tensor under another name (model.<name>, the norms renamed, Marian's
// projections renamed). A stack of routed experts is one of two layouts:
//   per expert  (the files transformers 4 writes): gate_up_proj [E, 2F, h] is experts.<e>.w1 / w3
//               (Mixtral, under block_sparse_moe) or experts.<e>.gate_proj / up_proj (Qwen), rows
//               [0, F) and [F, 2F) of expert e; down_proj [E, h, F] is experts.<e>.w2 / down_proj;
//               the router is block_sparse_moe.gate (Mixtral) or mlp.gate (Qwen)
//   fused       (transformers 5): mlp.experts.gate_up_proj and mlp.experts.down_proj whole, the
//               router mlp.gate
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "parallel/sharding.h"

namespace foldtron {

enum class HfExperts { kPerExpert, kFused };

// One Hugging Face tensor: the box of the foldtron global tensor it holds and its own shape
// (box.size, without the expert dimension of a per-expert tensor, or with the leading 1 of
// Marian's final_logits_bias [1, V]).
struct HfPart {
  std::string name;
  Box box;
  std::vector<int64_t> shape;
};

// The Hugging Face tensors of the foldtron global tensor `name` ([shape]) of a model of `arch`;
// empty when it has none (an XLM-style model's language embeddings, learned positions).
std::vector<HfPart> hf_parts(Architecture arch, const std::string& name, const std::vector<int64_t>& shape,
                             HfExperts experts);

// Hugging Face's name of expert `e`'s `which` projection ("gate_proj", "up_proj" or "down_proj")
// in decoder layer `layer`, per-expert layout.
std::string hf_expert_name(Architecture arch, int64_t layer, int64_t e, const std::string& which);

}  // namespace foldtron
