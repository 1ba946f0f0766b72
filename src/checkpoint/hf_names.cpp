// foldtron <-> Hugging Face tensor names (see hf_names.h).
#include "checkpoint/hf_names.h"

#include <regex>

#include <fmt/format.h>

namespace foldtron {
namespace {

// A decoder-only model's plain tensors: model.<name>, the norms renamed, lm_head kept.
std::string decoder_only_name(const std::string& name) {
  static const std::regex layer_norm(R"(layers\.(\d+)\.(self_attn_norm|mlp_norm)\.weight)");
  std::smatch match;
  if (std::regex_match(name, match, layer_norm)) {
    return fmt::format("model.layers.{}.{}.weight", match[1].str(),
                       match[2] == "self_attn_norm" ? "input_layernorm" : "post_attention_layernorm");
  }
  return name.rfind("lm_head", 0) == 0 ? name : "model." + name;
}

// Marian's names: o_proj -> out_proj, cross_attn -> encoder_attn, the norms by position, the
// MLP's projections fc1/fc2 directly on the layer. Experts and XLM-only parts have none.
std::string marian_name(const std::string& name) {
  if (name == "final_logits_bias" || name.rfind("lm_head", 0) == 0) return name;
  if (name.find(".mlp.gate") != std::string::npos || name.find(".mlp.experts") != std::string::npos ||
      name.find("shared_expert") != std::string::npos || name.find("embed_") != std::string::npos ||
      name.find("embedding_norm") != std::string::npos || name.find(".norm.") != std::string::npos) {
    return "";
  }
  std::string out = "model." + name;
  static const std::vector<std::pair<std::regex, std::string>> renames{
      {std::regex(R"(\.o_proj\.)"), ".out_proj."},
      {std::regex(R"(\.cross_attn\.)"), ".encoder_attn."},
      {std::regex(R"(\.self_attn_norm\.)"), ".self_attn_layer_norm."},
      {std::regex(R"(\.cross_attn_norm\.)"), ".encoder_attn_layer_norm."},
      {std::regex(R"(\.mlp_norm\.)"), ".final_layer_norm."},
      {std::regex(R"(\.mlp\.up_proj\.)"), ".fc1."},
      {std::regex(R"(\.mlp\.down_proj\.)"), ".fc2."},
  };
  for (const auto& [pattern, replacement] : renames) out = std::regex_replace(out, pattern, replacement);
  return out;
}

Box whole(const std::vector<int64_t>& shape) { return Box{std::vector<int64_t>(shape.size(), 0), shape}; }

}  // namespace

std::string hf_expert_name(Architecture arch, int64_t layer, int64_t e, const std::string& which) {
  if (arch == Architecture::kMixtral) {
    const char* w = which == "gate_proj" ? "w1" : which == "up_proj" ? "w3" : "w2";
    return fmt::format("model.layers.{}.block_sparse_moe.experts.{}.{}.weight", layer, e, w);
  }
  return fmt::format("model.layers.{}.mlp.experts.{}.{}.weight", layer, e, which);
}

std::vector<HfPart> hf_parts(Architecture arch, const std::string& name, const std::vector<int64_t>& shape,
                             HfExperts experts) {
  static const std::regex expert_stack(R"(layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj))");
  static const std::regex router(R"(layers\.(\d+)\.mlp\.gate\.weight)");
  const bool marian = arch == Architecture::kMarian;
  std::smatch match;
  if (!marian && std::regex_match(name, match, expert_stack)) {
    const int64_t layer = std::stoll(match[1].str());
    if (experts == HfExperts::kFused) return {{"model." + name, whole(shape), shape}};
    std::vector<HfPart> parts;
    const int64_t rows = shape[1], cols = shape[2];
    for (int64_t e = 0; e < shape[0]; ++e) {
      if (match[2] == "down_proj") {
        parts.push_back({hf_expert_name(arch, layer, e, "down_proj"), Box{{e, 0, 0}, {1, rows, cols}}, {rows, cols}});
        continue;
      }
      const int64_t f = rows / 2;  // [gate; up]
      parts.push_back({hf_expert_name(arch, layer, e, "gate_proj"), Box{{e, 0, 0}, {1, f, cols}}, {f, cols}});
      parts.push_back({hf_expert_name(arch, layer, e, "up_proj"), Box{{e, f, 0}, {1, f, cols}}, {f, cols}});
    }
    return parts;
  }
  if (!marian && std::regex_match(name, match, router)) {
    const bool block_sparse = arch == Architecture::kMixtral && experts == HfExperts::kPerExpert;
    return {{fmt::format("model.layers.{}.{}.gate.weight", match[1].str(), block_sparse ? "block_sparse_moe" : "mlp"),
             whole(shape), shape}};
  }
  if (marian && name == "final_logits_bias") {
    std::vector<int64_t> row{1};
    row.insert(row.end(), shape.begin(), shape.end());
    return {{name, whole(shape), row}};
  }
  const std::string hf = marian ? marian_name(name) : decoder_only_name(name);
  if (hf.empty()) return {};
  return {{hf, whole(shape), shape}};
}

}  // namespace foldtron
