// Hugging Face weights -> a foldtron model built for any layout. Every parameter's full tensor
// (in foldtron's arrangement) is assembled from the checkpoint and this rank keeps its shard, so
// a layout only changes which slices each rank reads. Names come from the model (Model::hf_name),
// except the routed experts, whose layouts differ:
//   layers.<i>.mlp.gate.weight          <- mlp.gate.weight (Qwen) or block_sparse_moe.gate.weight (Mixtral)
//   layers.<i>.mlp.experts.gate_up_proj <- per expert e of this rank: [gate; up] rows from
//                                          experts.<e>.{gate_proj,up_proj} / {w1,w3}, or the fused
//                                          mlp.experts.gate_up_proj [E, 2F, h]
//   layers.<i>.mlp.experts.down_proj    <- experts.<e>.down_proj / w2, or the fused [E, h, F]
// Buffers with a Hugging Face name (Marian's final_logits_bias) are read too. Only the local
// experts are read, one tensor at a time. A missing tensor or a shape other than the model's is a
// CheckpointError naming it.
#pragma once

#include <string>

namespace foldtron {

class HfCheckpoint;
class Model;

// Copies the checkpoint's weights into `model`, shard by shard.
void load_hf_weights(Model& model, const HfCheckpoint& checkpoint);

}  // namespace foldtron
