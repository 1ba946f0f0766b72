// Version queries of torch_compat.h.
#include "core/torch_compat.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>
#ifdef FOLDTRON_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

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

double cuda_peak_memory_gb(int device) {
#ifdef FOLDTRON_WITH_CUDA
  // Index 0 of the per-pool statistics is the aggregate over all pools.
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0 * 1024.0);
#else
  (void)device;
  return 0.0;
#endif
}

void set_cuda_device(int device) {
#ifdef FOLDTRON_WITH_CUDA
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
#else
  (void)device;
#endif
}

void start_trace(bool cuda) {
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  std::set<ActivityType> activities{ActivityType::CPU};
  if (cuda) activities.insert(ActivityType::CUDA);
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
}

void stop_trace(const std::string& path) { torch::autograd::profiler::disableProfiler()->save(path); }

}  // namespace foldtron::torch_compat
