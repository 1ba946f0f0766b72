// The model registry: one factory per model.architecture (CTranslate2's explicit registry). The
// trainer, `foldtron forward`, `foldtron generate` and the tests build every model here.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "models/model.h"

namespace foldtron {

class ProcessGroups;

// Everything a factory needs: the layer context (its registry and RNG streams are the model's),
// the config, and which chunks this rank builds.
struct ModelBuild {
  LayerContext ctx;
  const Config* config = nullptr;
  ModelPart part;
  std::shared_ptr<ParamRegistry> registry;
  std::shared_ptr<RngTracker> rng;
};
using ModelFactory = std::function<std::shared_ptr<Model>(const ModelBuild&)>;

// The architectures with a factory, in declaration order.
std::vector<Architecture> registered_architectures();

// This rank's part of the model config.model describes, in the layout of `groups`, initialized
// from train.seed alike in every layout, its parameters on `device` in model.params_dtype.
// `seed` overrides train.seed when not negative.
std::shared_ptr<Model> build_model(const Config& config, ProcessGroups& groups, torch::Device device,
                                   int64_t seed = -1);

}  // namespace foldtron
