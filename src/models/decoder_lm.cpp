// Decoder-only language model (see decoder_lm.h).
#include "models/decoder_lm.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "layers/recompute.h"
#include "parallel/communicator.h"
#include "parallel/rng.h"

namespace foldtron {

DecoderLayer::DecoderLayer(const LayerContext& ctx, int64_t index, const ModelConfig& model, const MoEConfig& moe_config)
    : ctx_(ctx), dropout_(model.hidden_dropout) {
  const std::string name = fmt::format("model.layers.{}", index);
  input_layernorm = register_module("input_layernorm",
                                    std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps));
  self_attn = register_module("self_attn", std::make_shared<Attention>(ctx, name + ".self_attn", model));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps));
  if (moe_config.is_moe_layer(index)) {
    moe = register_module("mlp", std::make_shared<MoELayer>(ctx, name + ".mlp", model, moe_config));
  } else {
    mlp = register_module("mlp", std::make_shared<Mlp>(ctx, name + ".mlp", model.hidden_size, model.ffn_hidden_size,
                                                       model.activation, model.init_std));
  }
}

torch::Tensor DecoderLayer::forward(const torch::Tensor& x, const torch::Tensor& positions) {
  // With sequence parallelism the residual stream is split over tp, so its dropout differs per
  // tp rank (model-parallel stream); otherwise it is replicated and drops alike (data stream).
  const RngStream stream = ctx_.sequence_parallel ? RngStream::kModelParallel : RngStream::kData;
  auto drop = [&](const torch::Tensor& t) {
    return is_training() && dropout_ > 0 ? ctx_.rng->dropout(t, dropout_, stream) : t;
  };
  torch::Tensor h = x + drop(self_attn->forward(input_layernorm->forward(x), positions));  // [s(/tp), b, h]
  const torch::Tensor normed = post_attention_layernorm->forward(h);
  return h + drop(moe ? moe->forward(normed) : mlp->forward(normed));
}

DecoderLM::DecoderLM(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe)
    : ctx_(ctx), recompute_full_(model.recompute == Recompute::kFull), recompute_num_layers_(model.recompute_num_layers) {
  embed_tokens = register_module("embed_tokens", std::make_shared<VocabParallelEmbedding>(
                                                     ctx, "model.embed_tokens", model.vocab_size, model.hidden_size,
                                                     model.init_std));
  torch::nn::ModuleList stack = register_module("layers", torch::nn::ModuleList());  // names "layers.<i>."
  for (int64_t i = 0; i < model.num_layers; ++i) {
    layers.push_back(std::make_shared<DecoderLayer>(ctx, i, model, moe));
    stack->push_back(layers.back());
  }
  norm = register_module("norm", std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps));
  if (!model.tie_embeddings) {
    lm_head = register_module("lm_head", std::make_shared<ColumnParallelLinear>(ctx, "lm_head", model.hidden_size,
                                                                               model.vocab_size, false, model.init_std));
  }
}

torch::Tensor DecoderLM::logits(const torch::Tensor& ids, std::vector<torch::Tensor>* hidden_states,
                                const torch::Tensor& token_positions) {
  const int64_t s = ids.size(0);
  const torch::Tensor positions =
      token_positions.defined() ? token_positions
                                : torch::arange(s, torch::TensorOptions().dtype(torch::kLong).device(ids.device()));
  torch::Tensor x = embed_tokens->forward(ids);  // [s(/tp), b, h]
  if (recompute_full_ && is_training() && !hidden_states) {
    // Full recomputation: blocks of recompute_num_layers layers keep only their input.
    const auto count = static_cast<int64_t>(layers.size());
    for (int64_t begin = 0; begin < count; begin += recompute_num_layers_) {
      const int64_t end = std::min(begin + recompute_num_layers_, count);
      x = checkpoint(
          [this, begin, end](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
            torch::Tensor y = in[0];
            for (int64_t l = begin; l < end; ++l) y = layers[static_cast<size_t>(l)]->forward(y, in[1]);
            return {y};
          },
          {x, positions}, ctx_.rng)[0];
    }
  } else {
    for (const auto& layer : layers) {
      if (hidden_states) hidden_states->push_back(x);
      x = layer->forward(x, positions);
    }
  }
  x = norm->forward(x);
  if (hidden_states) hidden_states->push_back(x);
  // The output layer gathers the sequence (SP) and returns this rank's vocabulary shard.
  if (lm_head) return lm_head->forward(x);  // [s, b, V/tp]
  return torch::nn::functional::linear(enter_column_parallel(x, ctx_), embed_tokens->weight);  // tied: [V/tp, h]
}

std::vector<std::shared_ptr<MoELayer>> DecoderLM::moe_layers() const {
  std::vector<std::shared_ptr<MoELayer>> out;
  for (const auto& layer : layers) {
    if (layer->moe) out.push_back(layer->moe);
  }
  return out;
}

void DecoderLM::set_router_loss_scale(double scale) {
  for (const auto& layer : moe_layers()) layer->set_router_loss_scale(scale);
}

RouterLosses DecoderLM::router_losses() const {
  RouterLosses total;
  auto add = [](torch::Tensor& sum, const torch::Tensor& term) {
    if (term.defined()) sum = sum.defined() ? sum + term : term;
  };
  for (const auto& layer : moe_layers()) {
    add(total.load_balancing, layer->gate->losses().load_balancing);
    add(total.z_loss, layer->gate->losses().z_loss);
  }
  return total;
}

torch::Tensor DecoderLM::token_losses(const torch::Tensor& ids, const torch::Tensor& targets,
                                      const torch::Tensor& positions) {
  return vocab_parallel_cross_entropy(logits(ids, nullptr, positions), targets, *ctx_.tp);  // [s, b]
}

}  // namespace foldtron
