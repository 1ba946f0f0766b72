// Version queries of torch_compat.h.
#include "core/torch_compat.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#ifdef FOLDTRON_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <ATen/cuda/CUDAContext.h>
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

int cuda_compute_major(int device) {
#ifdef FOLDTRON_WITH_CUDA
  return at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(device))->major;
#else
  (void)device;
  return 0;
#endif
}

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

namespace {

[[noreturn, maybe_unused]] void missing(const char* what) {
  throw InternalError(fmt::format("{} needs a newer torch than {} (check torch_compat::has_* first)", what,
                                  TORCH_VERSION));
}

}  // namespace

torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           const torch::Tensor& mask, bool causal, double scale) {
#if FOLDTRON_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v, mask.defined() ? c10::optional<torch::Tensor>(mask) : c10::nullopt,
                                          0.0, causal, scale);
#else
  (void)q, (void)k, (void)v, (void)mask, (void)causal, (void)scale;
  missing("scaled_dot_product_attention");
#endif
}

std::pair<torch::Tensor, torch::Tensor> flash_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                        const torch::Tensor& v, bool causal, double scale) {
#if FOLDTRON_TORCH_AT_LEAST(2, 2)
  auto result = at::_scaled_dot_product_flash_attention(q, k, v, /*dropout_p=*/0.0, causal,
                                                        /*return_debug_mask=*/false, scale);
  return {std::move(std::get<0>(result)), std::move(std::get<1>(result))};
#else
  (void)q, (void)k, (void)v, (void)causal, (void)scale;
  missing("flash_attention");
#endif
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_attention_backward(
    const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& out, const torch::Tensor& lse, bool causal, double scale) {
#if FOLDTRON_TORCH_AT_LEAST(2, 2)
  // Without dropout the random-number state is not read; dense inputs need no cumulative lengths.
  const torch::Tensor unused_rng = torch::zeros({}, torch::kLong);
  return at::_scaled_dot_product_flash_attention_backward(dout, q, k, v, out, lse, torch::Tensor(), torch::Tensor(),
                                                          q.size(2), k.size(2), /*dropout_p=*/0.0, causal,
                                                          unused_rng, unused_rng, scale);
#else
  (void)dout, (void)q, (void)k, (void)v, (void)out, (void)lse, (void)causal, (void)scale;
  missing("flash_attention_backward");
#endif
}

std::pair<torch::Tensor, torch::Tensor> cudnn_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                        const torch::Tensor& v, bool causal, double scale) {
#if FOLDTRON_TORCH_AT_LEAST(2, 6)
  auto result = at::_scaled_dot_product_cudnn_attention(q, k, v, /*attn_bias=*/c10::nullopt,
                                                        /*compute_log_sumexp=*/true, /*dropout_p=*/0.0, causal,
                                                        /*return_debug_mask=*/false, scale);
  // cuDNN's statistics come as [b, h, sq, 1]: the same values as [b, h, sq].
  return {std::move(std::get<0>(result)), std::get<1>(result).reshape({q.size(0), q.size(1), q.size(2)})};
#else
  (void)q, (void)k, (void)v, (void)causal, (void)scale;
  missing("cudnn_attention");
#endif
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> cudnn_attention_backward(
    const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& out, const torch::Tensor& lse, bool causal, double scale) {
#if FOLDTRON_TORCH_AT_LEAST(2, 6)
  // Without dropout the random-number state is not read; dense inputs need no cumulative lengths.
  const torch::Tensor unused_rng = torch::zeros({}, q.options().dtype(torch::kLong));
  return at::_scaled_dot_product_cudnn_attention_backward(
      dout, q, k, v, out, lse.reshape({q.size(0), q.size(1), q.size(2), 1}), unused_rng, unused_rng,
      /*attn_bias=*/torch::Tensor(), /*cum_seq_q=*/torch::Tensor(), /*cum_seq_k=*/torch::Tensor(), q.size(2), k.size(2),
      /*dropout_p=*/0.0, causal, scale);
#else
  (void)dout, (void)q, (void)k, (void)v, (void)out, (void)lse, (void)causal, (void)scale;
  missing("cudnn_attention_backward");
#endif
}

torch::Tensor grouped_mm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& offs) {
#if FOLDTRON_TORCH_AT_LEAST(2, 8)
  return at::_grouped_mm(a, b, offs);
#else
  (void)a, (void)b, (void)offs;
  missing("grouped_mm");
#endif
}

void mm_fp32_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, bool accumulate) {
#if FOLDTRON_TORCH_AT_LEAST(2, 9)
  torch::Tensor target = out;
  if (accumulate) {
    at::_ops::addmm_dtype_out::call(target, a, b, torch::kFloat, 1, 1, target);
  } else {
    at::_ops::mm_dtype_out::call(a, b, torch::kFloat, target);
  }
#else
  (void)out, (void)a, (void)b, (void)accumulate;
  missing("mm_fp32_out");
#endif
}

std::vector<torch::Tensor> foreach_norm(const std::vector<torch::Tensor>& tensors) {
#if FOLDTRON_TORCH_AT_LEAST(2, 6)
  return at::_foreach_norm(tensors, 2, torch::kFloat);
#elif FOLDTRON_TORCH_AT_LEAST(2, 1)
  return at::_foreach_norm(tensors, 2);
#else
  (void)tensors;
  missing("foreach_norm");
#endif
}

void foreach_copy(const std::vector<torch::Tensor>& into, const std::vector<torch::Tensor>& from) {
#if FOLDTRON_TORCH_AT_LEAST(2, 2)
  at::_foreach_copy_(into, from);
#else
  (void)into, (void)from;
  missing("foreach_copy");
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
