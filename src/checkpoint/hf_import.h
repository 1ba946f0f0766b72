// Hugging Face weights -> a foldtron model built for any layout. Every parameter's full tensor
// (in foldtron's arrangement) is assembled from the checkpoint and this rank keeps its shard, so
// a layout only changes which slices each rank reads:
//   model.embed_tokens.weight, model.norm.weight, lm_head.weight      <- the same names
//   model.layers.<i>.<attention, norms, dense mlp>                    <- the same names
//   layers.<i>.mlp.gate.weight          <- mlp.gate.weight (Qwen2-MoE) or block_sparse_moe.gate.weight (Mixtral)
//   layers.<i>.mlp.experts.gate_up_proj <- per expert e of this rank: [gate; up] rows from
//                                          experts.<e>.{gate_proj,up_proj} / {w1,w3}, or the fused
//                                          mlp.experts.gate_up_proj [E, 2F, h]
//   layers.<i>.mlp.experts.down_proj    <- experts.<e>.down_proj / w2, or the fused [E, h, F]
//   layers.<i>.mlp.shared_expert*       <- the same names (Qwen2-MoE)
// Only the local experts are read, one tensor at a time. A missing tensor or a shape other than
// the model's is a CheckpointError naming it.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "layers/context.h"

namespace foldtron {

class HfCheckpoint;

// Copies the checkpoint's weights into `model` (a DecoderLM), shard by shard.
void load_hf_weights(torch::nn::Module& model, const ParamRegistry& registry, const HfCheckpoint& checkpoint);

// The Hugging Face name of a non-expert parameter of foldtron's model ("layers.0.self_attn.q_proj.weight"
// -> "model.layers.0.self_attn.q_proj.weight"); used by the import and by tests.
std::string hf_name(const std::string& name);

}  // namespace foldtron
