// constexpr parts of torch_compat.h (they need torch's version macros, which are light). The
// version macro is for torch_compat's own files only: every other file asks the has_* queries.
#pragma once

#include <torch/version.h>

namespace foldtron::torch_compat {

#define FOLDTRON_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

constexpr bool has_sdpa() { return FOLDTRON_TORCH_AT_LEAST(2, 0); }
constexpr bool has_grouped_mm() { return FOLDTRON_TORCH_AT_LEAST(2, 8); }
constexpr bool has_foreach_norm() { return FOLDTRON_TORCH_AT_LEAST(2, 1); }
constexpr bool has_foreach_norm_of_16bit() { return FOLDTRON_TORCH_AT_LEAST(2, 6); }
constexpr bool has_foreach_copy() { return FOLDTRON_TORCH_AT_LEAST(2, 2); }
constexpr bool has_mm_fp32_out() { return FOLDTRON_TORCH_AT_LEAST(2, 9); }
constexpr bool has_flash_attention() { return FOLDTRON_TORCH_AT_LEAST(2, 2); }
constexpr bool has_cudnn_attention() { return FOLDTRON_TORCH_AT_LEAST(2, 6); }

}  // namespace foldtron::torch_compat
