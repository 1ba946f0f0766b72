// Whether two configs describe the same network: the keys that shape its tensors (a checkpoint of
// one cannot load into the other) and the keys that change what it computes with the same tensors
// (routing, norms, positions). Checkpoint loading refuses the first kind and warns about the
// second; Hugging Face export refuses both.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace foldtron {

struct ModelDifference {
  std::string key;  // e.g. "model.hidden_size"
  std::string a, b;
  bool shapes = false;  // the tensors' shapes or names differ
  std::string text() const;  // "model.hidden_size 64 vs 128"
};

// Every model and moe key in which `a` and `b` differ as networks. Keys that cannot matter are
// skipped (the dense FFN width when every layer has experts).
std::vector<ModelDifference> model_differences(const Config& a, const Config& b);

}  // namespace foldtron
