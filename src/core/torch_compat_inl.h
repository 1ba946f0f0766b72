// constexpr parts of torch_compat.h (they need torch's version macros, which are light).
#pragma once

#include <torch/version.h>

namespace foldtron::torch_compat {

#define FOLDTRON_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

constexpr bool has_sdpa() { return FOLDTRON_TORCH_AT_LEAST(2, 0); }
constexpr bool has_grouped_mm() { return FOLDTRON_TORCH_AT_LEAST(2, 8); }

}  // namespace foldtron::torch_compat
