// Hugging Face weights -> a foldtron model built for any layout. Every parameter's full tensor
// (in foldtron's arrangement) is assembled from the checkpoint and this rank keeps its shard, so
// a layout only changes which slices each rank reads. Names and the two layouts of routed experts
// (per expert, or fused as transformers 5 writes them) are hf_names.h's. Buffers with a Hugging
// Face name (Marian's final_logits_bias) are read too. Only the local experts are read, one tensor
// at a time. A missing tensor or a shape other than the model's is a
// CheckpointError naming it.
#pragma once

#include <string>

namespace foldtron {

class HfCheckpoint;
class Model;
enum class HfExperts;

// The layout of the checkpoint's routed experts: fused when it holds mlp.experts.gate_up_proj
// stacks, per expert otherwise.
HfExperts hf_expert_layout(const HfCheckpoint& checkpoint);

// Copies the checkpoint's weights into `model`, shard by shard.
void load_hf_weights(Model& model, const HfCheckpoint& checkpoint);

}  // namespace foldtron
