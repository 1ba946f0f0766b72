// Megatron-Core's FLOPs count (see flops.h).
#include "training/flops.h"

#include <algorithm>

namespace foldtron {

int64_t num_moe_layers(const Config& config) {
  int64_t count = 0;
  for (int64_t layer = 0; layer < config.model.num_layers; ++layer) count += config.moe.is_moe_layer(layer) ? 1 : 0;
  return count;
}

double flops_per_step(const Config& config, int64_t sequences, int64_t seq_length) {
  const ModelConfig& m = config.model;
  const double B = static_cast<double>(sequences), s = static_cast<double>(seq_length);
  const double L = static_cast<double>(m.num_layers), h = static_cast<double>(m.hidden_size);
  const double L_m = static_cast<double>(num_moe_layers(config)), L_d = L - L_m;
  const double g = m.activation == Activation::kSwiglu ? 1.5 : 1.0;
  const double a = static_cast<double>(m.num_attention_heads), n_g = static_cast<double>(m.num_query_groups);
  const double q = static_cast<double>(m.kv_channels()) * a / h;
  const double ffn = static_cast<double>(m.ffn_hidden_size);
  const double moe_ffn = static_cast<double>(config.moe.expert_ffn_hidden_size > 0 ? config.moe.expert_ffn_hidden_size
                                                                                   : m.ffn_hidden_size);
  const double k = static_cast<double>(config.moe.topk);
  const double shared = static_cast<double>(config.moe.shared_expert_ffn_hidden_size);
  const double V = static_cast<double>(m.vocab_size);
  const double mlp = 12.0 * B * s * L * h * (ffn * g * L_d / L + (moe_ffn * k * g + shared * g) * L_m / L);
  const double attention = 12.0 * B * s * L * h * h * q * (1.0 + n_g / a + s / (2.0 * h));
  const double logits = 6.0 * B * s * h * V;
  return mlp + attention + logits;
}

double encoder_decoder_flops(const Config& config, double source_length, double target_length) {
  const ModelConfig& m = config.model;
  const double h = static_cast<double>(m.hidden_size), s = source_length, t = target_length;
  const double g = m.activation == Activation::kSwiglu ? 1.5 : 1.0;
  const double a = static_cast<double>(m.num_attention_heads), n_g = static_cast<double>(m.num_query_groups);
  const double q = static_cast<double>(m.kv_channels()) * a / h;
  const double moe_ffn = static_cast<double>(config.moe.expert_ffn_hidden_size > 0 ? config.moe.expert_ffn_hidden_size
                                                                                   : m.ffn_hidden_size);
  const double shared = static_cast<double>(config.moe.shared_expert_ffn_hidden_size);
  // fwd + bwd FLOPs of one token's MLP in layer `index` (encoder layers first).
  const auto mlp = [&](int64_t index) {
    const double width = config.moe.is_moe_layer(index) ? moe_ffn * static_cast<double>(config.moe.topk) + shared
                                                         : static_cast<double>(m.ffn_hidden_size);
    return 12.0 * h * width * g;
  };
  const double projections = 12.0 * h * h * q * (1.0 + n_g / a);
  double total = 0;
  for (int64_t layer = 0; layer < m.encoder_layers; ++layer) {
    total += s * (projections + mlp(layer) + 12.0 * s * h * q);
  }
  if (t == 0) return total + 6.0 * s * h * static_cast<double>(m.vocab_size);  // encoder-only logits (MLM)
  for (int64_t layer = 0; layer < m.num_layers; ++layer) {
    total += t * (projections + mlp(m.encoder_layers + layer) + 6.0 * t * h * q);  // causal self-attention
    total += t * (12.0 * h * h * q + 12.0 * s * h * q) + s * 12.0 * h * h * q * n_g / a;  // cross-attention
  }
  return total + 6.0 * t * h * static_cast<double>(m.vocab_size);
}

}  // namespace foldtron
