// The Model interface every family implements, so the trainer, `foldtron forward`, generation and
// the tests drive any model alike (build one with build_model, models/registry.h).
//
// A model is built for one rank of a layout: its tensor-parallel shards of the layers of its
// pipeline chunks (ModelPart). A forward runs chunk by chunk: the first chunk embeds the inputs,
// each chunk hands the next the tensors of its stream (stream_spec: what crosses a pipeline
// stage), and the last chunk returns the vocabulary-parallel logits. Losses are the task's
// business (training/task.h), not the model's.
//
// The model owns what its layers point at: the parameter registry (each parameter's sharding)
// and the RNG streams (dropout), which the train state also saves.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/context.h"
#include "layers/transformer_layer.h"
#include "parallel/model_part.h"
#include "parallel/stream.h"

namespace foldtron {

class MoELayer;

// One micro-batch as a model reads it, on this rank (with context parallelism: this rank's chunks
// of each sequence). Sequence-first like the activations.
struct ModelInputs {
  torch::Tensor input_ids;  // [s, b] int64: a decoder-only model's tokens, or an encoder's source
  torch::Tensor positions;  // [s] (every sequence alike) or [s, b] int64: the tokens' positions
  torch::Tensor mask;       // [s, b] bool, true: a token, false: padding; undefined: no padding
  torch::Tensor languages;  // [b] int64 language ids (language embeddings); undefined: none
  // Encoder-decoder: the decoder's side.
  torch::Tensor decoder_input_ids;  // [t, b] int64
  torch::Tensor decoder_positions;  // [t] or [t, b]; undefined: 0..t-1
  torch::Tensor decoder_mask;       // [t, b] bool; undefined: no padding
  torch::Tensor decoder_languages;  // [b] int64
  // Encoder-decoder: the output layer reads the encoder's output and the decoder does not run
  // (masked language modelling, XLM's pretraining); decoder_input_ids is then [0, b].
  bool encoder_only = false;
};

class Model : public torch::nn::Module {
 public:
  Model(const LayerContext& ctx, ModelPart part, std::shared_ptr<ParamRegistry> registry,
        std::shared_ptr<RngTracker> rng);

  const ModelPart& part() const { return part_; }
  const LayerContext& context() const { return ctx_; }
  ParamRegistry& registry() const { return *registry_; }
  RngTracker& rng() const { return *rng_; }

  virtual Architecture architecture() const = 0;
  virtual bool encoder_decoder() const { return false; }
  virtual int64_t vocab_size() const = 0;  // logits past it are padding (a multiple of tp)
  virtual int64_t hidden_size() const = 0;

  // The tensors a pipeline stage sends on for a micro-batch with these inputs (their shapes on
  // this rank; the last stage sends nothing). While decoding with `cache`, what that step sends.
  virtual StreamSpec stream_spec(const ModelInputs& inputs, const KVCache* cache = nullptr) const = 0;
  // Local chunk `chunk` (see ModelPart): the model's first chunk embeds `inputs`, the others
  // continue `stream` from the chunk before. Returns the stream for the next chunk, or on the
  // last chunk {logits}: [s, b, Vp/tp] (encoder-decoder: [t, b, Vp/tp]) in the parameters' dtype.
  virtual TensorList forward_chunk(int64_t chunk, const ModelInputs& inputs, const TensorList& stream,
                                   ForwardState& state) = 0;
  // The whole model in one call (pp 1): the logits.
  torch::Tensor logits(const ModelInputs& inputs, ForwardState& state);

  // Hidden states (ForwardState::hidden_states) in the order Hugging Face lists them: for each
  // stack (the encoder's, then the decoder's) the stream before each layer, then its output.
  // The number of them, and the pipeline rank that captures state `index`.
  int64_t num_hidden_states() const;
  int64_t num_encoder_states() const { return encoder_layers() > 0 ? encoder_layers() + 1 : 0; }
  int64_t hidden_state_owner(int64_t index) const;

  // This rank's MoE layers, and the weight of their router losses in the training loss (see
  // MoELayer: 1 / (micro-batches * dp)).
  std::vector<std::shared_ptr<MoELayer>> moe_layers() const;
  void set_router_loss_scale(double scale);


 protected:
  // The layers of this rank by global index, in order (models register them).
  void add_layer(int64_t index, std::shared_ptr<TransformerLayer> layer);
  TransformerLayer& layer(int64_t index) const;
  // Layers [begin, end) of this rank over x, with full recomputation in blocks when configured
  // (training, no hidden states asked).
  torch::Tensor run_layers(int64_t begin, int64_t end, torch::Tensor x, const LayerInputs& in, ForwardState& state);
  // Encoder layers counted before the decoder's (0 without an encoder).
  virtual int64_t encoder_layers() const { return 0; }
  // This rank's rows of a sequence-first tensor [s, ...] under sequence parallelism (itself
  // without): the local rows of the residual stream.
  torch::Tensor local_rows(const torch::Tensor& x) const;

  LayerContext ctx_;
  ModelPart part_;
  Recompute recompute_ = Recompute::kNone;
  int64_t recompute_num_layers_ = 1;

 private:
  std::shared_ptr<ParamRegistry> registry_;
  std::shared_ptr<RngTracker> rng_;
  std::vector<std::pair<int64_t, std::shared_ptr<TransformerLayer>>> layers_;  // (global index, layer)
};

// [s, b] bool token mask -> [b, s] key padding; undefined stays undefined.
torch::Tensor key_padding_of(const torch::Tensor& mask);

// What every family builds alike from the model config:
// the options of its Transformer layers (norms, attention, positions, dropout, recomputation);
TransformerLayerOptions transformer_layer_options(const ModelConfig& model);
// layer `index`'s feed-forward block, the MoE layer where moe.is_moe_layer(index), else the dense MLP;
std::shared_ptr<FeedForward> feed_forward(const LayerContext& ctx, const std::string& name, int64_t index,
                                          const ModelConfig& model, const MoEConfig& moe);
// a table that the first and the last pipeline stage both hold (tied embeddings with pp > 1),
// marked so both copies take the same update (ParamInfo::stage_tied).
void tie_across_stages(const LayerContext& ctx, const torch::Tensor& weight);

}  // namespace foldtron
