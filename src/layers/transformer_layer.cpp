// The Transformer layer (see transformer_layer.h).
#include "layers/transformer_layer.h"

#include <torch/torch.h>

#include "parallel/rng.h"

namespace foldtron {

void KVCache::select(const torch::Tensor& rows) {
  for (auto& [index, layer] : layers) {
    layer.self.select(rows);
    layer.cross.select(rows);
  }
  if (key_padding.defined()) key_padding = key_padding.index_select(0, rows);
  if (encoder_padding.defined()) encoder_padding = encoder_padding.index_select(0, rows);
}

void ForwardState::add_router_losses(const torch::Tensor& aux, const torch::Tensor& z) {
  const auto add = [](torch::Tensor& sum, const torch::Tensor& term) {
    if (term.defined()) sum = sum.defined() ? sum + term.detach() : term.detach();
  };
  add(aux_loss, aux);
  add(z_loss, z);
}

void attention_masks(LayerInputs& in, int64_t queries, int64_t memory_length, bool cached, torch::Device device) {
  if (in.key_padding.defined()) {
    in.self_mask = attention_mask(queries, in.key_padding.size(1), in.causal, in.key_padding, device);
  } else if (!in.causal && !cached) {
    in.self_mask = attention_mask(queries, queries, false, torch::Tensor(), device);
  }
  if (in.memory_padding.defined()) {
    in.memory_mask = attention_mask(queries, in.memory_padding.size(1), false, in.memory_padding, device);
  } else if (in.memory.defined() && !cached) {
    in.memory_mask = attention_mask(queries, memory_length, false, torch::Tensor(), device);
  }
}

TransformerLayer::TransformerLayer(const LayerContext& ctx, const std::string& name,
                                   const TransformerLayerOptions& options, std::shared_ptr<FeedForward> ffn)
    : ctx_(ctx), options_(options) {
  const auto norm = [&] {
    return std::make_shared<Norm>(ctx, options.normalization, options.hidden, options.norm_eps);
  };
  self_attn_norm = register_module("self_attn_norm", norm());
  self_attn = register_module("self_attn", std::make_shared<Attention>(ctx, name + ".self_attn", options.attention));
  if (options.cross_attention) {
    AttentionOptions cross = options.attention;
    cross.cross = true;
    cross.rope_theta = 0;
    cross.qk_norm = false;
    cross_attn_norm = register_module("cross_attn_norm", norm());
    cross_attn = register_module("cross_attn", std::make_shared<Attention>(ctx, name + ".cross_attn", cross));
  }
  mlp_norm = register_module("mlp_norm", norm());
  mlp = register_module("mlp", std::move(ffn));
}

torch::Tensor TransformerLayer::drop(const torch::Tensor& x) {
  if (!is_training() || options_.dropout <= 0) return x;
  // With sequence parallelism the residual stream is split over tp, so its dropout differs per
  // tp rank (model-parallel stream); otherwise it is replicated and drops alike (data stream).
  return ctx_.rng->dropout(x, options_.dropout, ctx_.sp() ? RngStream::kModelParallel : RngStream::kData);
}

torch::Tensor TransformerLayer::forward(const torch::Tensor& x, const LayerInputs& in, ForwardState& state) {
  KVCache::Layer* cache = state.cache ? &state.cache->layers[options_.index] : nullptr;
  AttentionInputs self{in.positions, in.causal, in.key_padding, torch::Tensor(), cache ? &cache->self : nullptr,
                       in.self_mask};
  AttentionInputs cross{in.positions, false, in.memory_padding, in.memory, cache ? &cache->cross : nullptr,
                        in.memory_mask};
  const auto ffn = [&](const torch::Tensor& h) { return mlp->forward(h, in.token_mask, state); };
  if (options_.norm_position == NormPosition::kPre) {
    torch::Tensor h = x + drop(self_attn->forward(self_attn_norm->forward(x), self));  // [s(/tp), b, h]
    if (cross_attn) h = h + drop(cross_attn->forward(cross_attn_norm->forward(h), cross));
    return h + drop(ffn(mlp_norm->forward(h)));
  }
  torch::Tensor h = self_attn_norm->forward(x + drop(self_attn->forward(x, self)));
  if (cross_attn) h = cross_attn_norm->forward(h + drop(cross_attn->forward(h, cross)));
  return mlp_norm->forward(h + drop(ffn(h)));
}

}  // namespace foldtron
