// RMSNorm and LayerNorm (see norm.h).
#include "layers/norm.h"

#include <torch/torch.h>
#ifdef FOLDTRON_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "layers/rmsnorm_cuda.h"
#endif

namespace foldtron {

#ifdef FOLDTRON_WITH_CUDA
namespace {

// The fused kernels (layers/rmsnorm_cuda.h) as an autograd function: saves x, the weight and the
// per-row rstd (fp32); the weight gradient is the fp32 sum of the kernel's per-block partials.
class FusedRmsNorm : public torch::autograd::Function<FusedRmsNorm> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, double eps) {
    const int64_t hidden = x.size(-1), rows = x.numel() / hidden;
    torch::Tensor y = torch::empty_like(x, torch::MemoryFormat::Contiguous);          // [..., h]
    torch::Tensor rstd = torch::empty({rows}, x.options().dtype(torch::kFloat));      // [rows]
    rmsnorm_forward_cuda(x.data_ptr(), weight.data_ptr(), y.data_ptr(), rstd.data_ptr<float>(), rows, hidden, eps,
                         c10::cuda::getCurrentCUDAStream().stream());
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const torch::autograd::variable_list saved = ctx->get_saved_variables();  // x, weight, rstd
    const torch::Tensor& x = saved[0];       // [..., h]
    const torch::Tensor& weight = saved[1];  // [h]
    torch::Tensor dy = grads[0].contiguous();  // [..., h]
    // The kernel reads 16 bytes at a time: a contiguous view may start off that alignment.
    if (reinterpret_cast<uintptr_t>(dy.data_ptr()) % 16 != 0) dy = dy.clone();
    const int64_t hidden = x.size(-1), rows = x.numel() / hidden;
    const int64_t blocks = rmsnorm_backward_blocks(rows);
    torch::Tensor dx = torch::empty_like(x, torch::MemoryFormat::Contiguous);                  // [..., h]
    torch::Tensor partial = torch::empty({blocks, hidden}, x.options().dtype(torch::kFloat));  // [blocks, h]
    rmsnorm_backward_cuda(dy.data_ptr(), x.data_ptr(), weight.data_ptr(), saved[2].data_ptr<float>(), dx.data_ptr(),
                          partial.data_ptr<float>(), rows, hidden, blocks, c10::cuda::getCurrentCUDAStream().stream());
    torch::Tensor dw = blocks > 0 ? partial.sum(0).to(weight.scalar_type()) : torch::zeros_like(weight);
    return {dx, dw, torch::Tensor()};
  }
};

bool fused_rmsnorm_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  const auto aligned = [](const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; };
  const int64_t hidden = x.dim() > 0 ? x.size(-1) : 0;
  return x.is_cuda() && x.scalar_type() == torch::kBFloat16 && weight.scalar_type() == torch::kBFloat16 &&
         weight.is_cuda() && weight.dim() == 1 && weight.size(0) == hidden && hidden % 8 == 0 && hidden > 0 &&
         hidden <= kRmsNormCudaMaxHidden && x.is_contiguous() && weight.is_contiguous() && aligned(x) &&
         aligned(weight);
}

}  // namespace
#endif

Norm::Norm(const LayerContext& ctx, Normalization kind, int64_t hidden, double eps, bool partial_over_tp)
    : kind_(kind), eps_(eps) {
  const bool summed = ctx.sequence_parallel || partial_over_tp;
  weight = register_parameter("weight", replicated_param(ctx, torch::ones({hidden}), summed));
  if (kind == Normalization::kLayerNorm) {
    bias = register_parameter("bias", replicated_param(ctx, torch::zeros({hidden}), summed));
  }
}

torch::Tensor Norm::forward(const torch::Tensor& x) {
  if (kind_ == Normalization::kLayerNorm) {
    return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps_);
  }
#ifdef FOLDTRON_WITH_CUDA
  if (fused_rmsnorm_applies(x, weight)) return FusedRmsNorm::apply(x, weight, eps_);
#endif
  const torch::Tensor x32 = x.to(torch::kFloat);
  const torch::Tensor normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + eps_);
  return weight * normed.to(x.scalar_type());
}

}  // namespace foldtron
