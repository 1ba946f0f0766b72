// YAML spellings of the configuration enumerations (config.h), in declaration order.
#include "config/config.h"

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
FOLDTRON_ENUM_NAMES(LrDecay, "cosine", "linear", "constant")
FOLDTRON_ENUM_NAMES(Recompute, "none", "full", "core_attn", "moe_act", "selective")
FOLDTRON_ENUM_NAMES(Tokenizer, "byte", "sentencepiece")
FOLDTRON_ENUM_NAMES(log::Level, "debug", "info", "warning", "error")

#undef FOLDTRON_ENUM_NAMES

}  // namespace foldtron
