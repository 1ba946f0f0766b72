// Decoder-only language model (Llama, Mixtral and Qwen2-MoE shapes), assembled from the
// tensor-parallel layers and the MoE layer:
//   ids [s, b] -> embedding -> L x (x + attn(norm(x)); x + mlp(norm(x))) -> norm -> output layer
//   -> vocab-parallel logits [s, b, V/tp] -> per-token cross-entropy [s, b]
// where `mlp` is a dense MLP or, on the layers moe.is_moe_layer() names, an MoE layer.
// The residual stream is [s, b, h], or [s/tp, b, h] with sequence parallelism. Parameter names
// (named_parameters()) follow Hugging Face's Llama names where they exist.
//
// Pipeline parallelism: the layers are cut into pp*vpp chunks in order (ModelPart), and each
// rank builds only its chunks: global chunk c = v*pp + r is local chunk v of pp rank r. The
// first chunk also holds the embedding, the last the final norm and output layer; with tied
// embeddings and pp > 1 the last stage holds its own copy of the embedding table
// (ParamInfo::stage_tied), kept equal to the first stage's by summing their gradients.
#pragma once

#include <memory>
#include <vector>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/attention.h"
#include "layers/embedding.h"
#include "layers/mlp.h"
#include "layers/norm.h"
#include "moe/moe_layer.h"

namespace foldtron {

// Which layers this rank builds: chunk boundaries of the pp*vpp global chunks (even, or
// parallel.pipeline_layers) and this rank's pp coordinate. The default is the whole model.
struct ModelPart {
  int64_t pp = 1, vpp = 1, pp_rank = 0;
  std::vector<int64_t> chunk_begin;  // first layer of each global chunk, then num_layers

  static ModelPart whole(int64_t num_layers) { return {1, 1, 0, {0, num_layers}}; }
  static ModelPart of(const ParallelConfig& parallel, int64_t num_layers, int64_t pp_rank);
  int64_t num_chunks() const { return vpp; }  // local chunks
  int64_t global_chunk(int64_t chunk) const { return chunk * pp + pp_rank; }
  bool has_embedding(int64_t chunk) const { return global_chunk(chunk) == 0; }
  bool has_head(int64_t chunk) const { return global_chunk(chunk) == pp * vpp - 1; }
  int64_t pp_rank_of_layer(int64_t layer) const;  // the pp rank holding global layer `layer`
  int64_t begin(int64_t chunk) const { return chunk_begin[static_cast<size_t>(global_chunk(chunk))]; }
  int64_t end(int64_t chunk) const { return chunk_begin[static_cast<size_t>(global_chunk(chunk)) + 1]; }
};

class DecoderLayer : public torch::nn::Module {
 public:
  DecoderLayer(const LayerContext& ctx, int64_t index, const ModelConfig& model, const MoEConfig& moe);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions);

  std::shared_ptr<Norm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<Mlp> mlp;       // dense layers
  std::shared_ptr<MoELayer> moe;  // MoE layers (registered as "mlp" too)

 private:
  LayerContext ctx_;
  double dropout_;
};

class DecoderLM : public torch::nn::Module {
 public:
  DecoderLM(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe = MoEConfig{},
            ModelPart part = {});

  const ModelPart& part() const { return part_; }
  int64_t vocab_size() const { return vocab_size_; }
  int64_t hidden_size() const { return hidden_size_; }
  // The residual stream between pipeline stages for `batch` sequences of `seq` tokens:
  // [seq/cp (/tp with sequence parallelism), batch, hidden], in the parameters' dtype.
  std::vector<int64_t> stream_shape(int64_t seq, int64_t batch) const;
  torch::TensorOptions stream_options() const;
  // Local chunk `chunk`: ids [s, b] on the first chunk, else the residual stream from the chunk
  // before, through its layers; returns the residual stream, or on the last chunk the
  // vocab-parallel logits. `hidden_states` collects the stream before each of its layers (and
  // the final norm's output on the last chunk).
  torch::Tensor forward_chunk(int64_t chunk, const torch::Tensor& input, const torch::Tensor& positions,
                              std::vector<torch::Tensor>* hidden_states = nullptr);

  // The whole model (one chunk, no pipeline parallelism):
  // ids [s, b] int64 -> vocab-parallel logits [s, b, V/tp]. With `hidden_states`, also the
  // residual stream as Hugging Face lists it: the embedding output, the stream after each layer
  // but the last, and the final norm's output (L + 1 tensors of [s(/tp), b, h]).
  // `positions` [s]: the tokens' positions in their sequences (context parallelism gives each
  // rank its chunks, cp_positions); undefined means 0..s-1.
  torch::Tensor logits(const torch::Tensor& ids, std::vector<torch::Tensor>* hidden_states = nullptr,
                       const torch::Tensor& positions = {});
  // Per-token next-token losses [s, b] for ids [s, b] and targets [s, b] (kIgnoreIndex masks).
  torch::Tensor token_losses(const torch::Tensor& ids, const torch::Tensor& targets, const torch::Tensor& positions = {});

  // The MoE layers (of one local chunk, or all of this rank's), and the sum of their router
  // losses from their last forward (this rank's shares; undefined when none apply).
  std::vector<std::shared_ptr<MoELayer>> moe_layers(int64_t chunk = -1) const;
  RouterLosses router_losses(int64_t chunk = -1) const;
  // Weight of the router losses in the training loss (see MoELayer::set_router_loss_scale).
  void set_router_loss_scale(double scale);

  // Null where this rank's chunks do not hold them.
  std::shared_ptr<VocabParallelEmbedding> embed_tokens;  // first chunk (and the last when tied)
  std::vector<std::shared_ptr<DecoderLayer>> layers;     // this rank's, in order
  std::shared_ptr<Norm> norm;                            // last chunk
  std::shared_ptr<ColumnParallelLinear> lm_head;         // last chunk; null with tied embeddings

 private:
  std::shared_ptr<DecoderLayer>& layer(int64_t index);  // by global index (one of this rank's)

  LayerContext ctx_;
  ModelPart part_;
  std::vector<int64_t> layer_index_;  // global index of layers[i]
  int64_t vocab_size_, hidden_size_;
  bool recompute_full_;
  int64_t recompute_num_layers_;
};

}  // namespace foldtron
