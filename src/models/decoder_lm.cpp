// Decoder-only language models (see decoder_lm.h).
#include "models/decoder_lm.h"


#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "layers/embedding.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "parallel/process_groups.h"

namespace foldtron {

DecoderLM::DecoderLM(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe, ModelPart part,
                     std::shared_ptr<ParamRegistry> registry, std::shared_ptr<RngTracker> rng)
    : Model(ctx, std::move(part), std::move(registry), std::move(rng)),
      architecture_(model.architecture),
      vocab_size_(model.vocab_size),
      hidden_size_(model.hidden_size) {
  recompute_ = model.recompute;
  recompute_num_layers_ = model.recompute_num_layers;
  const bool first = part_.has_embedding(0), last = part_.has_head(part_.num_chunks() - 1);
  if (first || (last && model.tie_embeddings)) {
    embed_tokens = register_module("embed_tokens", std::make_shared<VocabParallelEmbedding>(
                                                       ctx, "model.embed_tokens", model.vocab_size, model.hidden_size,
                                                       model.init_std, model.pad_token_id));
    if (model.tie_embeddings && part_.pp > 1) tie_across_stages(ctx, embed_tokens->weight);
  }
  TransformerLayerOptions options = transformer_layer_options(model);
  // Named by global index ("layers.<i>."), whichever of them this rank holds.
  auto stack = register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t chunk = 0; chunk < part_.num_chunks(); ++chunk) {
    for (int64_t i = part_.begin(chunk); i < part_.end(chunk); ++i) {
      const std::string name = fmt::format("model.layers.{}", i);
      options.index = i;
      add_layer(i, stack->register_module(std::to_string(i), std::make_shared<TransformerLayer>(
                                                                 ctx, name, options,
                                                                 feed_forward(ctx, name + ".mlp", i, model, moe))));
    }
  }
  if (last) {
    norm = register_module("norm", std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps));
    if (!model.tie_embeddings) {
      const int64_t padding = padded_vocab(model.vocab_size, ctx.tp_size()) - model.vocab_size;
      lm_head = register_module("lm_head", std::make_shared<ColumnParallelLinear>(ctx, "lm_head", model.hidden_size,
                                                                                 model.vocab_size, false, model.init_std,
                                                                                 false, padding));
    }
  }
}

StreamSpec DecoderLM::stream_spec(const ModelInputs& inputs, const KVCache* /*cache*/) const {
  const int64_t s = inputs.input_ids.size(0), b = inputs.input_ids.size(1);
  return {{{s / (ctx_.sp() ? ctx_.tp_size() : 1), b, hidden_size_},
           torch::TensorOptions().dtype(ctx_.dtype).device(ctx_.device)}};
}

TensorList DecoderLM::forward_chunk(int64_t chunk, const ModelInputs& inputs, const TensorList& stream,
                                    ForwardState& state) {
  FT_CHECK(chunk >= 0 && chunk < part_.num_chunks(), fmt::format("no local pipeline chunk {}", chunk));
  torch::Tensor x = part_.has_embedding(chunk) ? embed_tokens->forward(inputs.input_ids) : stream.at(0);  // [s(/tp), b, h]
  LayerInputs in;
  in.positions = inputs.positions;
  in.causal = true;
  in.key_padding = state.cache ? state.cache->key_padding : key_padding_of(inputs.mask);  // [b, sk]
  in.token_mask = local_rows(inputs.mask);
  attention_masks(in, inputs.input_ids.size(0), 0, state.cache != nullptr, ctx_.device);
  x = run_layers(part_.begin(chunk), part_.end(chunk), x, in, state);
  if (!part_.has_head(chunk)) return {x};
  x = norm->forward(x);
  if (state.hidden_states) state.hidden_states->push_back(x);
  // The output layer gathers the sequence (SP) and returns this rank's vocabulary shard.
  if (lm_head) return {lm_head->forward(x)};  // [s, b, Vp/tp]
  return {torch::nn::functional::linear(enter_column_parallel(x, ctx_), embed_tokens->weight)};  // tied: [Vp/tp, h]
}

}  // namespace foldtron
