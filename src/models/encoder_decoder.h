// The encoder-decoder Transformer (Marian, and XLM-style models): one vocabulary shared by the
// source, the target and the output layer.
//   source [s, b] -> embed (x sqrt(h) when scale_embeddings, + positions, + language, norm)
//                 -> Le encoder layers (bidirectional, source key padding) -> memory
//   target [t, b] -> embed (alike) -> Ld decoder layers (causal self-attention, cross-attention
//                 over memory with the source key padding) -> output layer (tied or not)
//                 (+ final_logits_bias) -> vocab-parallel logits [t, b, Vp/tp]
// With ModelInputs::encoder_only the output layer reads the memory instead and the decoder does
// not run: vocab-parallel logits [s, b, Vp/tp] of the source (masked language modelling).
// Layers are pre- or post-norm (pre-norm stacks end in a norm), positions sinusoidal (Marian),
// learned (XLM) or rotary; feed-forward blocks dense or MoE (moe.is_moe_layer over the global
// layer index: encoder layers first).
//
// Pipeline parallelism counts the encoder's layers before the decoder's. The first stage embeds
// both the source and the target, and every stage sends on two tensors: the encoder stream (the
// memory, once the encoder is done) and the decoder stream. The last stage holds the output
// layer; with tied embeddings and pp > 1 it holds its own copy of the table (stage_tied).
// While decoding with a cache whose encoder is done, the encoder stream is empty.
#pragma once

#include <memory>

#include "models/model.h"

namespace foldtron {

class Norm;
class PositionEmbedding;
class VocabParallelEmbedding;
class ColumnParallelLinear;

class EncoderDecoder : public Model {
 public:
  EncoderDecoder(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe, ModelPart part,
                 std::shared_ptr<ParamRegistry> registry, std::shared_ptr<RngTracker> rng);

  Architecture architecture() const override { return architecture_; }
  bool encoder_decoder() const override { return true; }
  int64_t vocab_size() const override { return vocab_size_; }
  int64_t hidden_size() const override { return hidden_size_; }
  // {encoder stream [s(/tp), b, h] (no rows once a decoding cache holds the encoder),
  //  decoder stream [t(/tp), b, h]}.
  StreamSpec stream_spec(const ModelInputs& inputs, const KVCache* cache = nullptr) const override;
  TensorList forward_chunk(int64_t chunk, const ModelInputs& inputs, const TensorList& stream,
                           ForwardState& state) override;

  // The embeddings of one stack (on the first stage).
  struct Embeddings {
    std::shared_ptr<PositionEmbedding> positions;       // learned or sinusoidal; null with rotary
    std::shared_ptr<torch::nn::Module> languages;       // "weight" [languages, h]; null without
    torch::Tensor language_weight;
    std::shared_ptr<Norm> norm;                         // embedding_norm
  };

  std::shared_ptr<VocabParallelEmbedding> shared;  // first stage (and the last when tied)
  Embeddings encoder_embeddings, decoder_embeddings;
  std::shared_ptr<Norm> encoder_norm, decoder_norm;  // pre-norm stacks end in a norm
  std::shared_ptr<ColumnParallelLinear> lm_head;     // untied output layer
  torch::Tensor final_logits_bias;                   // buffer [Vp/tp], with final_logits_bias

 protected:
  int64_t encoder_layers() const override { return encoder_layers_; }

 private:
  // ids [s, b] -> [s(/tp), b, h]: token embedding (scaled), positions, language, norm, dropout.
  torch::Tensor embed(const Embeddings& embeddings, const torch::Tensor& ids, const torch::Tensor& positions,
                      const torch::Tensor& languages);
  void build_embeddings(Embeddings& embeddings, torch::nn::Module& owner, const std::string& name,
                        const ModelConfig& model);
  torch::Tensor positions_or_default(const torch::Tensor& positions, int64_t length) const;

  Architecture architecture_;
  int64_t vocab_size_, hidden_size_, encoder_layers_;
  double embed_scale_;
  double dropout_;
  bool rotary_;
};

}  // namespace foldtron
