// Decoder-only language models (Llama, Mixtral, Qwen2-MoE and Qwen3-MoE shapes), assembled from
// the tensor-parallel layers and the MoE layer:
//   ids [s, b] -> embedding -> L x TransformerLayer (pre-norm, causal, rotary) -> norm -> output
//   layer -> vocab-parallel logits [s, b, Vp/tp]
// where each layer's MLP is dense or, on the layers moe.is_moe_layer() names, an MoE layer. The
// residual stream is [s, b, h], or [s/tp, b, h] with sequence parallelism (and [s/cp, ...] with
// context parallelism). With pp > 1 and tied embeddings the last stage holds its own copy of the
// embedding table (ParamInfo::stage_tied), kept equal to the first stage's by summing their
// gradients. Parameter names are Hugging Face's Llama names without "model." and with the layers'
// role names (checkpoint/hf_names.h maps them).
#pragma once

#include <memory>

#include "models/model.h"

namespace foldtron {

class Norm;
class VocabParallelEmbedding;
class ColumnParallelLinear;

class DecoderLM : public Model {
 public:
  DecoderLM(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe, ModelPart part,
            std::shared_ptr<ParamRegistry> registry, std::shared_ptr<RngTracker> rng);

  Architecture architecture() const override { return architecture_; }
  int64_t vocab_size() const override { return vocab_size_; }
  int64_t hidden_size() const override { return hidden_size_; }
  // [s/cp (/tp with sequence parallelism), b, h] in the parameters' dtype.
  StreamSpec stream_spec(const ModelInputs& inputs, const KVCache* cache = nullptr) const override;
  TensorList forward_chunk(int64_t chunk, const ModelInputs& inputs, const TensorList& stream,
                           ForwardState& state) override;

  // Null where this rank's chunks do not hold them.
  std::shared_ptr<VocabParallelEmbedding> embed_tokens;  // first chunk (and the last when tied)
  std::shared_ptr<Norm> norm;                            // last chunk
  std::shared_ptr<ColumnParallelLinear> lm_head;         // last chunk; null with tied embeddings

 private:
  Architecture architecture_;
  int64_t vocab_size_, hidden_size_;
};

}  // namespace foldtron
