// Version queries of torch_compat.h.
#include "core/torch_compat.h"

#include <torch/torch.h>

namespace foldtron::torch_compat {

std::string torch_version() { return TORCH_VERSION; }
int torch_major() { return TORCH_VERSION_MAJOR; }
int torch_minor() { return TORCH_VERSION_MINOR; }

bool built_with_cuda() {
#ifdef FOLDTRON_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

}  // namespace foldtron::torch_compat
