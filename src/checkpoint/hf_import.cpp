// Hugging Face weight import (see hf_import.h).
#include "checkpoint/hf_import.h"

#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "checkpoint/safetensors.h"
#include "core/errors.h"
#include "core/text.h"
#include "models/model.h"

namespace foldtron {
namespace {

// The first of `names` the checkpoint has.
std::string first_present(const HfCheckpoint& checkpoint, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (checkpoint.has(name)) return name;
  }
  throw CheckpointError(fmt::format("the checkpoint in '{}' has none of the tensors {}", checkpoint.dir(),
                                    fmt::format("'{}'", fmt::join(names, "', '"))),
                        "is this directory a checkpoint of the family its config.json names?");
}

torch::Tensor load_checked(const HfCheckpoint& checkpoint, const std::string& name, at::IntArrayRef shape) {
  torch::Tensor full = checkpoint.load(name);
  if (full.sizes() != shape) {
    throw CheckpointError(fmt::format("tensor '{}' in '{}' has shape {}, but the model built from config.json "
                                      "expects {}",
                                      name, checkpoint.dir(), shape_text(full.sizes().vec()), shape_text(shape.vec())),
                          "the weights and config.json do not belong together");
  }
  return full;
}

// One expert's [gate; up] rows [2F, h] or down [h, F], from per-expert or fused tensors.
torch::Tensor expert_tensor(const HfCheckpoint& checkpoint, const std::string& layer, int64_t e, bool gate_up,
                            int64_t hidden, int64_t ffn) {
  const std::string fused = fmt::format("{}.mlp.experts.{}", layer, gate_up ? "gate_up_proj" : "down_proj");
  if (checkpoint.has(fused)) {
    const std::vector<int64_t> shape = checkpoint.shape(fused);
    const std::vector<int64_t> expected{shape.empty() ? 0 : shape[0], gate_up ? 2 * ffn : hidden, gate_up ? hidden : ffn};
    return load_checked(checkpoint, fused, expected)[e];
  }
  auto per_expert = [&](const char* qwen, const char* mixtral) {
    return first_present(checkpoint, {fmt::format("{}.mlp.experts.{}.{}.weight", layer, e, qwen),
                                      fmt::format("{}.block_sparse_moe.experts.{}.{}.weight", layer, e, mixtral)});
  };
  if (!gate_up) return load_checked(checkpoint, per_expert("down_proj", "w2"), {hidden, ffn});
  return torch::cat({load_checked(checkpoint, per_expert("gate_proj", "w1"), {ffn, hidden}),
                     load_checked(checkpoint, per_expert("up_proj", "w3"), {ffn, hidden})},
                    0);
}

}  // namespace

void load_hf_weights(Model& model, const HfCheckpoint& checkpoint) {
  torch::NoGradGuard no_grad;
  static const std::regex expert_stack(R"(layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj))");
  static const std::regex expert_single(R"(layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj))");
  static const std::regex router(R"(layers\.(\d+)\.mlp\.gate\.weight)");
  const ParamRegistry& registry = model.registry();
  const auto load_into = [&](const std::string& name, torch::Tensor target) {
    const ParamInfo info = registry.info(target);
    const std::vector<int64_t> shape = global_shape(target, info);
    std::smatch match;
    torch::Tensor full;
    if (std::regex_match(name, match, expert_stack)) {  // [E/ep, 2F, h] or [E/ep, h, F]
      const std::string layer = "model.layers." + match[1].str();
      const bool gate_up = match[2] == "gate_up_proj";
      const int64_t hidden = gate_up ? shape[2] : shape[1], ffn = gate_up ? shape[1] / 2 : shape[2];
      std::vector<torch::Tensor> experts;
      for (int64_t e = 0; e < shape[0]; ++e) {
        experts.push_back(expert_tensor(checkpoint, layer, info.expert_begin + e, gate_up, hidden, ffn));
      }
      full = torch::stack(experts);
    } else if (std::regex_match(name, match, expert_single)) {  // the sequential reference experts
      const std::string layer = "model.layers." + match[1].str(), which = match[3].str();
      const bool down = which == "down_proj";
      const int64_t hidden = down ? shape[0] : shape[1], ffn = down ? shape[1] : shape[0];
      const torch::Tensor t = expert_tensor(checkpoint, layer, info.expert_begin, !down, hidden, ffn);
      full = down ? t : t.chunk(2, 0)[which == "gate_proj" ? 0 : 1];
    } else if (std::regex_match(name, match, router)) {
      const std::string layer = "model.layers." + match[1].str();
      full = load_checked(checkpoint,
                          first_present(checkpoint, {layer + ".mlp.gate.weight", layer + ".block_sparse_moe.gate.weight"}),
                          shape);
    } else {
      const std::string hf = model.hf_name(name);
      if (hf.empty()) {
        throw CheckpointError(fmt::format("'{}' of the {} model has no Hugging Face counterpart", name,
                                          enum_name(model.architecture())),
                              "import checkpoints of the families Hugging Face has (docs/models.md)");
      }
      // Hugging Face keeps some vectors as [1, n] (Marian's final_logits_bias).
      const std::vector<int64_t> stored = checkpoint.has(hf) ? checkpoint.shape(hf) : shape;
      const bool row = stored.size() == 2 && stored[0] == 1 && shape.size() == 1;
      full = load_checked(checkpoint, hf, row ? std::vector<int64_t>{1, shape[0]} : shape).reshape(shape);
    }
    target.copy_(shard_of(full, info).to(target.scalar_type()));
  };
  for (const auto& item : model.named_parameters()) load_into(item.key(), item.value());
  // Buffers that are weights carry a layout in the registry (the rest is state: router counts,
  // sinusoidal tables).
  for (const auto& item : model.named_buffers()) {
    if (registry.has(item.value())) load_into(item.key(), item.value());
  }
}

}  // namespace foldtron
