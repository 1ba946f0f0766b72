// Hugging Face weight import (see hf_import.h).
#include "checkpoint/hf_import.h"

#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "checkpoint/hf_names.h"
#include "checkpoint/safetensors.h"
#include "core/errors.h"
#include "core/text.h"
#include "models/model.h"

namespace foldtron {
namespace {

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

}  // namespace

HfExperts hf_expert_layout(const HfCheckpoint& checkpoint) {
  static const std::regex fused(R"(model\.layers\.\d+\.mlp\.experts\.(gate_up_proj|down_proj))");
  for (const std::string& name : checkpoint.names()) {
    if (std::regex_match(name, fused)) return HfExperts::kFused;
  }
  return HfExperts::kPerExpert;
}

void load_hf_weights(Model& model, const HfCheckpoint& checkpoint) {
  torch::NoGradGuard no_grad;
  static const std::regex expert_single(R"(layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight)");
  const ParamRegistry& registry = model.registry();
  const Architecture arch = model.architecture();
  const HfExperts experts = hf_expert_layout(checkpoint);
  const auto load_into = [&](const std::string& name, torch::Tensor target) {
    const ParamInfo info = registry.info(target);
    const std::vector<int64_t> shape = global_shape(target, info);
    std::smatch match;
    if (std::regex_match(name, match, expert_single)) {  // the sequential reference experts: one each
      const std::string hf = hf_expert_name(arch, std::stoll(match[1].str()), info.expert_begin, match[3].str());
      target.copy_(shard_of(load_checked(checkpoint, hf, shape), info).to(target.scalar_type()));
      return;
    }
    const std::vector<HfPart> parts = hf_parts(arch, name, shape, experts);
    if (parts.empty()) {
      throw CheckpointError(fmt::format("'{}' of the {} model has no Hugging Face counterpart", name, enum_name(arch)),
                            "import checkpoints of the families Hugging Face has (docs/models.md)");
    }
    // This rank's experts of a stack (dim 0), or the whole tensor; read part by part.
    Box mine{std::vector<int64_t>(shape.size(), 0), shape};
    if (info.num_experts > 0) {
      mine.offset[0] = info.expert_begin;
      mine.size[0] = target.size(0);
    }
    torch::Tensor full = torch::empty(mine.size, torch::TensorOptions().dtype(target.scalar_type()));
    for (const HfPart& part : parts) {
      const Box overlap = intersect(mine, part.box);
      if (overlap.empty()) continue;
      torch::Tensor from = load_checked(checkpoint, part.name, part.shape).reshape(part.box.size);
      torch::Tensor into = full;
      for (size_t d = 0; d < shape.size(); ++d) {
        const auto dim = static_cast<int64_t>(d);
        from = from.narrow(dim, overlap.offset[d] - part.box.offset[d], overlap.size[d]);
        into = into.narrow(dim, overlap.offset[d] - mine.offset[d], overlap.size[d]);
      }
      into.copy_(from);
    }
    target.copy_(shard_of(full, info));
  };
  for (const auto& item : model.named_parameters()) load_into(item.key(), item.value());
  // Buffers that are weights carry a layout in the registry (the rest is state: router counts,
  // sinusoidal tables).
  for (const auto& item : model.named_buffers()) {
    if (registry.has(item.value())) load_into(item.key(), item.value());
  }
}

}  // namespace foldtron
