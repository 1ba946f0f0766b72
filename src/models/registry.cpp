// The model registry (see registry.h).
#include "models/registry.h"

#include <map>

#include <fmt/format.h>

#include "core/errors.h"
#include "models/decoder_lm.h"
#include "models/encoder_decoder.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"

namespace foldtron {
namespace {

template <typename M>
std::shared_ptr<Model> make(const ModelBuild& build) {
  return std::make_shared<M>(build.ctx, build.config->model, build.config->moe, build.part, build.registry, build.rng);
}

const std::map<Architecture, ModelFactory>& factories() {
  static const std::map<Architecture, ModelFactory> table{
      {Architecture::kLlama, make<DecoderLM>},    {Architecture::kMixtral, make<DecoderLM>},
      {Architecture::kQwen2Moe, make<DecoderLM>}, {Architecture::kQwen3Moe, make<DecoderLM>},
      {Architecture::kMarian, make<EncoderDecoder>},
  };
  return table;
}

}  // namespace

std::vector<Architecture> registered_architectures() {
  std::vector<Architecture> out;
  for (const auto& [architecture, factory] : factories()) out.push_back(architecture);
  return out;
}

std::shared_ptr<Model> build_model(const Config& config, ProcessGroups& groups, torch::Device device, int64_t seed) {
  const auto it = factories().find(config.model.architecture);
  if (it == factories().end()) {
    throw ConfigError("model.architecture",
                      fmt::format("'{}' has no model factory", enum_name(config.model.architecture)),
                      "register the family in models/registry.cpp (docs/models.md)");
  }
  ModelBuild build;
  build.config = &config;
  build.registry = std::make_shared<ParamRegistry>();
  const int64_t init_seed = seed >= 0 ? seed : config.train.seed;
  build.rng = std::make_shared<RngTracker>(init_seed, groups.coords(), device);
  build.part = ModelPart::of(config.parallel, config.model.total_layers(), groups.pp().rank());
  const torch::ScalarType dtype = config.model.params_dtype == DType::kBfloat16 ? torch::kBFloat16 : torch::kFloat;
  build.ctx = LayerContext{&groups.tp(), config.parallel.sequence_parallel && groups.tp().size() > 1,
                           init_seed, device, dtype, build.rng.get(), build.registry.get(), &groups,
                           config.parallel.cp_comm_type};
  return it->second(build);
}

}  // namespace foldtron
