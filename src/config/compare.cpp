// Comparing two configs as networks (see compare.h).
#include "config/compare.h"

#include <fmt/format.h>

namespace foldtron {
namespace {

class Differences {
 public:
  template <typename T>
  void add(const std::string& key, const T& a, const T& b, bool shapes) {
    if (a == b) return;
    out.push_back({key, text(a), text(b), shapes});
  }
  std::vector<ModelDifference> out;

 private:
  template <typename T>
  static std::string text(const T& value) {
    if constexpr (std::is_enum_v<T>) {
      return enum_name(value);
    } else if constexpr (std::is_same_v<T, bool>) {
      return value ? "true" : "false";
    } else if constexpr (std::is_same_v<T, std::vector<bool>>) {
      std::string s;
      for (bool v : value) s += v ? '1' : '0';
      return s;
    } else {
      return fmt::format("{}", value);
    }
  }
};

// Which layers have experts, as a vector over the decoder's layers.
std::vector<bool> moe_layers(const Config& c) {
  std::vector<bool> out;
  for (int64_t layer = 0; layer < c.model.num_layers; ++layer) out.push_back(c.moe.is_moe_layer(layer));
  return out;
}

bool has_dense_layer(const Config& c) {
  for (bool moe : moe_layers(c)) {
    if (!moe) return true;
  }
  return false;
}

}  // namespace

std::string ModelDifference::text() const { return fmt::format("{} {} vs {}", key, a, b); }

std::vector<ModelDifference> model_differences(const Config& a, const Config& b) {
  Differences d;
  const ModelConfig &ma = a.model, &mb = b.model;
  d.add("model.architecture", ma.architecture, mb.architecture, true);
  d.add("model.num_layers", ma.num_layers, mb.num_layers, true);
  d.add("model.encoder_layers", ma.encoder_layers, mb.encoder_layers, true);
  d.add("model.hidden_size", ma.hidden_size, mb.hidden_size, true);
  d.add("model.num_attention_heads", ma.num_attention_heads, mb.num_attention_heads, true);
  d.add("model.num_query_groups", ma.num_query_groups, mb.num_query_groups, true);
  d.add("model.head_dim", ma.kv_channels(), mb.kv_channels(), true);
  if (has_dense_layer(a) || has_dense_layer(b)) d.add("model.ffn_hidden_size", ma.ffn_hidden_size, mb.ffn_hidden_size, true);
  d.add("model.vocab_size", ma.vocab_size, mb.vocab_size, true);
  d.add("model.normalization", ma.normalization, mb.normalization, true);
  d.add("model.activation", ma.activation, mb.activation, true);
  d.add("model.qkv_bias", ma.qkv_bias, mb.qkv_bias, true);
  d.add("model.linear_bias", ma.linear_bias, mb.linear_bias, true);
  d.add("model.qk_norm", ma.qk_norm, mb.qk_norm, true);
  d.add("model.position_embedding", ma.position_embedding, mb.position_embedding, true);
  if (ma.position_embedding == PositionKind::kLearned) {
    d.add("model.max_position_embeddings", ma.max_position_embeddings, mb.max_position_embeddings, true);
  }
  d.add("model.embedding_norm", ma.embedding_norm, mb.embedding_norm, true);
  d.add("model.num_languages", ma.num_languages, mb.num_languages, true);
  d.add("model.final_logits_bias", ma.final_logits_bias, mb.final_logits_bias, true);
  d.add("model.tie_embeddings", ma.tie_embeddings, mb.tie_embeddings, true);
  d.add("model.norm_position", ma.norm_position, mb.norm_position, false);
  d.add("model.norm_eps", ma.norm_eps, mb.norm_eps, false);
  d.add("model.scale_embeddings", ma.scale_embeddings, mb.scale_embeddings, false);
  if (ma.position_embedding == PositionKind::kRotary) d.add("model.rope_theta", ma.rope_theta, mb.rope_theta, false);
  d.add("model.pad_token_id", ma.pad_token_id, mb.pad_token_id, false);

  const MoEConfig &ea = a.moe, &eb = b.moe;
  d.add("moe.num_experts", ea.num_experts, eb.num_experts, true);
  if (!ea.enabled() || !eb.enabled()) return d.out;
  d.add("moe layers (layer_step, dense_layers)", moe_layers(a), moe_layers(b), true);
  d.add("moe.expert_ffn_hidden_size", ea.expert_ffn(ma.ffn_hidden_size), eb.expert_ffn(mb.ffn_hidden_size), true);
  d.add("moe.shared_expert_ffn_hidden_size", ea.shared_expert_ffn_hidden_size, eb.shared_expert_ffn_hidden_size, true);
  d.add("moe.shared_expert_gate", ea.shared_expert_gate, eb.shared_expert_gate, true);
  d.add("moe.expert_bias", ea.expert_bias, eb.expert_bias, true);
  d.add("moe.topk", ea.topk, eb.topk, false);
  d.add("moe.router_score", ea.router_score, eb.router_score, false);
  d.add("moe.router_pre_softmax", ea.router_pre_softmax, eb.router_pre_softmax, false);
  d.add("moe.normalize_topk", ea.normalize_topk, eb.normalize_topk, false);
  d.add("moe.router_scaling_factor", ea.router_scaling_factor, eb.router_scaling_factor, false);
  d.add("moe.router_num_groups", ea.router_num_groups, eb.router_num_groups, false);
  if (ea.router_num_groups > 0) d.add("moe.router_group_topk", ea.router_group_topk, eb.router_group_topk, false);
  return d.out;
}

}  // namespace foldtron
