// YAML spellings of the configuration enumerations (config.h), in declaration order; data.split.
#include "config/config.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

namespace foldtron {

#define FOLDTRON_ENUM_NAMES(Enum, ...)                             \
  template <>                                                      \
  const std::vector<std::string>& enum_names<Enum>() {             \
    static const std::vector<std::string> names{__VA_ARGS__};      \
    return names;                                                  \
  }

FOLDTRON_ENUM_NAMES(Architecture, "llama", "mixtral", "qwen2_moe", "qwen3_moe", "marian")
FOLDTRON_ENUM_NAMES(Normalization, "rmsnorm", "layernorm")
FOLDTRON_ENUM_NAMES(Activation, "swiglu", "gelu", "relu", "silu")
FOLDTRON_ENUM_NAMES(NormPosition, "pre", "post")
FOLDTRON_ENUM_NAMES(PositionKind, "rotary", "learned", "sinusoidal")
FOLDTRON_ENUM_NAMES(DType, "fp32", "bf16")
FOLDTRON_ENUM_NAMES(RouterScore, "softmax", "sigmoid")
FOLDTRON_ENUM_NAMES(LoadBalancing, "aux_loss", "seq_aux_loss", "sinkhorn", "none")
FOLDTRON_ENUM_NAMES(DropPolicy, "probs", "position")
FOLDTRON_ENUM_NAMES(Dispatcher, "alltoall", "allgather")
FOLDTRON_ENUM_NAMES(CpCommType, "p2p", "a2a", "allgather")
FOLDTRON_ENUM_NAMES(SaveErrorPolicy, "stop", "warn")
FOLDTRON_ENUM_NAMES(LrDecay, "cosine", "linear", "constant")
FOLDTRON_ENUM_NAMES(Recompute, "none", "full", "core_attn", "moe_act", "selective")
FOLDTRON_ENUM_NAMES(Tokenizer, "byte", "sentencepiece")
FOLDTRON_ENUM_NAMES(log::Level, "debug", "info", "warning", "error")

#undef FOLDTRON_ENUM_NAMES

std::optional<std::array<double, 3>> parse_split(const std::string& text) {
  std::array<double, 3> shares{0, 0, 0};
  std::stringstream in(text);
  std::string part;
  size_t count = 0;
  while (std::getline(in, part, ',')) {
    if (count == shares.size()) return std::nullopt;
    char* end = nullptr;
    const double value = std::strtod(part.c_str(), &end);
    while (end != nullptr && *end == ' ') ++end;
    if (part.empty() || end == part.c_str() || *end != '\0' || !std::isfinite(value) || value < 0) return std::nullopt;
    shares[count++] = value;
  }
  if (count == 0 || text.back() == ',' || shares[0] + shares[1] + shares[2] <= 0) return std::nullopt;
  return shares;
}

}  // namespace foldtron
