// The one place where LibTorch version differences live: Debian's libtorch 1.13 (CPU, CI) and
// the torch 2.11 CUDA wheel (GPU machine). Later layers ask here whether SDPA, RMSNorm or
// grouped GEMM exist instead of testing versions themselves.
#pragma once

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace foldtron::torch_compat {

// "1.13.1", as compiled against.
std::string torch_version();
int torch_major();
int torch_minor();

// Fused kernels that appeared after 1.13.
constexpr bool has_sdpa();          // at::scaled_dot_product_attention (torch >= 2.0)
constexpr bool has_grouped_mm();    // at::_grouped_mm (torch >= 2.8, CUDA)
constexpr bool has_foreach_norm();  // at::_foreach_norm (torch >= 2.1)
constexpr bool has_foreach_norm_of_16bit();  // ... with fp32 results of 16-bit tensors too (its dtype, torch >= 2.6)
constexpr bool has_foreach_copy();  // at::_foreach_copy_ (torch >= 2.2)
constexpr bool has_mm_fp32_out();   // mm/addmm of 16-bit inputs into an fp32 output (torch >= 2.9)
constexpr bool has_flash_attention();  // the flash-attention op with its log-sum-exp, and its backward (torch >= 2.2)
constexpr bool has_cudnn_attention();  // cuDNN's attention op likewise (torch >= 2.6)

// The operations behind those queries. Each throws InternalError where its query is false;
// callers check the query (and fall back to plain operations) first.
// Softmax attention of q [b, hq, sq, d] over k, v [b, hq, sk, d]: causal (top-left aligned) when
// `causal`, else over the bool [sq, sk] or [b, 1, sq, sk] `mask` (true: attend; undefined: all).
torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           const torch::Tensor& mask, bool causal, double scale);
// The flash-attention kernels themselves (CUDA, bf16/fp16, head size a multiple of 8 up to 256),
// for callers that merge attention over key blocks: q [b, h, sq, d] over k, v [b, h, sk, d] (the
// same head count), causal when `causal` (callers pass square causal blocks: the kernels align a
// causal mask differently when sq != sk). Returns the output [b, h, sq, d] (q's
// dtype) and its log-sum-exp [b, h, sq] (fp32, natural log of the sum of exp(scale * q.k)).
std::pair<torch::Tensor, torch::Tensor> flash_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                        const torch::Tensor& v, bool causal, double scale);
// Gradients of q, k, v from the output's gradient `dout`, given the output and log-sum-exp that
// normalize the probabilities: a block's own, or those of the whole attention the block was
// merged into (then these are the block's share of the gradients). All but `lse` in q's dtype.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_attention_backward(
    const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& out, const torch::Tensor& lse, bool causal, double scale);
// The same two through cuDNN's fused attention (CUDA, bf16/fp16, head size a multiple of 8 up to 128).
std::pair<torch::Tensor, torch::Tensor> cudnn_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                        const torch::Tensor& v, bool causal, double scale);
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> cudnn_attention_backward(
    const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& out, const torch::Tensor& lse, bool causal, double scale);
// y [R, N] = x [R, K] w[e]^T for the rows of each expert e (offs [E] int32: row ends), w [E, N, K]
// given as its transpose [E, K, N]; or the weight gradient form a [N, R], b [R, K] -> [E, N, K].
torch::Tensor grouped_mm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& offs);
// out (fp32) = a b, or out += a b when `accumulate`: 16-bit inputs, fp32 accumulation and output.
void mm_fp32_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, bool accumulate);
// The L2 norm of each tensor (fp32 results; of 16-bit tensors only with has_foreach_norm_of_16bit),
// one fused launch per dtype.
std::vector<torch::Tensor> foreach_norm(const std::vector<torch::Tensor>& tensors);
// into[i] <- from[i] (converting dtypes), vectorized across the tensors.
void foreach_copy(const std::vector<torch::Tensor>& into, const std::vector<torch::Tensor>& from);

// Built with the CUDA/NCCL paths, and how many CUDA devices this process sees (0 without).
bool built_with_cuda();
int cuda_device_count();
// The major compute capability of CUDA device `device` (8: Ampere, 9: Hopper); 0 without CUDA.
int cuda_compute_major(int device);
// Peak bytes the CUDA caching allocator has handed out on `device` (GiB); 0 without CUDA.
double cuda_peak_memory_gb(int device);
// Makes `device` the calling thread's current CUDA device: each rank's own GPU, since
// foldtron's kernels launch on the current device's stream. A no-op without CUDA.
void set_cuda_device(int device);

// A Kineto trace (CPU ops, and CUDA kernels and copies when `cuda`) from start_trace() to
// stop_trace(), written as a Chrome trace JSON file to `path`.
void start_trace(bool cuda);
void stop_trace(const std::string& path);

}  // namespace foldtron::torch_compat

#include "core/torch_compat_inl.h"
