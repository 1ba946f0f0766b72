// One context-parallel rank's core attention at long sequences, on one GPU and without the
// communication: the pieces the all-gather path computes over the gathered keys, and the pieces
// the ring computes over every rank's key block (the blocks laid end to end here), each through
// layers/context_parallel's piecewise_attention with cuDNN's and with flash attention's kernels;
// against the causal attention of the whole sequence on one GPU (torch's SDPA), whose work the cp
// ranks share. Forward+backward, bf16,
// Mixtral's heads (32 query, 8 key/value, 128 wide). Prints milliseconds, TFLOP/s and the peak
// memory of each; flops count the allowed query-key pairs, 4 flops per pair and head dimension
// forward and 2.5 times that backward (the planner's convention).
//   cp_attention [--seq 131072] [--cp 2] [--rank 0] [--iters 3]
#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <c10/cuda/CUDACachingAllocator.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/torch_compat.h"
#include "layers/context_parallel.h"
#include "parallel/mpi_runtime.h"

namespace {

using namespace foldtron;

struct Options {
  int64_t seq = 131072;
  int64_t cp = 2;
  int64_t rank = 0;
  int iters = 3;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seq") {
      o.seq = std::stoll(argv[i + 1]);
    } else if (flag == "--cp") {
      o.cp = std::stoll(argv[i + 1]);
    } else if (flag == "--rank") {
      o.rank = std::stoll(argv[i + 1]);
    } else if (flag == "--iters") {
      o.iters = std::stoi(argv[i + 1]);
    } else {
      throw UsageError("unknown flag " + flag, "use --seq S, --cp N, --rank R, --iters N");
    }
  }
  if (o.cp < 1 || o.rank < 0 || o.rank >= o.cp || o.seq % (2 * o.cp) != 0) {
    throw UsageError(fmt::format("--seq {} --cp {} --rank {}", o.seq, o.cp, o.rank),
                     "use 0 <= rank < cp and a sequence that splits into 2*cp chunks");
  }
  return o;
}

// Milliseconds per call of op after one warm-up call, and the peak GiB allocated during them.
template <typename Op>
std::pair<double, double> time_ms(int iters, Op op) {
  op();
  torch::cuda::synchronize();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  torch::cuda::synchronize();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return {ms / iters, torch_compat::cuda_peak_memory_gb(0)};
}

int64_t allowed_pairs(const std::vector<AttentionPiece>& pieces) {
  int64_t pairs = 0;
  for (const AttentionPiece& p : pieces) pairs += p.causal ? p.q_len * (p.q_len + 1) / 2 : p.q_len * p.k_len;
  return pairs;
}

}  // namespace

int main(int argc, char** argv) {
  return run_guarded([&] {
    const Options o = parse(argc, argv);
    if (!torch::cuda::is_available()) throw UsageError("cp_attention needs a GPU", "run it on the GPU machine");
    const int64_t hq = 32, hkv = 8, d = 128, local = o.seq / o.cp;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const auto bf16 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
    const auto tensor = [&](int64_t heads, int64_t s) { return torch::randn({1, heads, s, d}, bf16).requires_grad_(true); };
    const auto report = [&](const std::string& name, int64_t queries, int64_t pairs,
                            const std::function<torch::Tensor()>& forward) {
      const torch::Tensor dout = torch::randn({1, hq, queries, d}, bf16);
      const auto [ms, peak] = time_ms(o.iters, [&] { forward().backward(dout); });
      const double tflop = 3.5 * 4.0 * static_cast<double>(pairs) * hq * d / 1e12;
      fmt::print("RESULT {}: {:.1f} ms forward+backward, {:.0f} TFLOP/s, peak {:.2f} GiB\n", name, ms, tflop / ms * 1e3,
                 peak);
    };
    fmt::print("cp_attention: sequence {}, cp {}, rank {} ({} queries), heads {}/{} x {}, bf16\n", o.seq, o.cp,
               o.rank, local, hq, hkv, d);
    {
      const torch::Tensor q = tensor(hq, o.seq), k = tensor(hkv, o.seq), v = tensor(hkv, o.seq);
      report("whole sequence, causal SDPA (cp 1)", o.seq, o.seq * (o.seq + 1) / 2, [&] {
        return torch_compat::scaled_dot_product_attention(q, k.repeat_interleave(hq / hkv, 1),
                                                          v.repeat_interleave(hq / hkv, 1), torch::Tensor(), true, scale);
      });
    }
    const torch::Tensor q = tensor(hq, local), keys = tensor(hkv, o.seq), values = tensor(hkv, o.seq);
    const std::vector<AttentionPiece> gathered = allgather_pieces(o.rank, o.cp, local);
    std::vector<AttentionPiece> ring;
    for (int64_t src = 0; src < o.cp; ++src) {
      AttentionPiece piece = ring_piece(o.rank, src, local);
      piece.k_begin += src * local;  // rank src's block
      ring.push_back(piece);
    }
    for (const auto& [kernel, name] : {std::pair{PieceKernel::kCudnn, "cuDNN"}, std::pair{PieceKernel::kFlash, "flash"}}) {
      if (!piece_kernel_runs(kernel, q)) continue;
      report(fmt::format("allgather pieces, {} (one rank)", name), local, allowed_pairs(gathered),
             [&] { return piecewise_attention(q, keys, values, gathered, scale, kernel); });
      report(fmt::format("ring pieces, {} (one rank, blocks end to end)", name), local, allowed_pairs(ring),
             [&] { return piecewise_attention(q, keys, values, ring, scale, kernel); });
    }
    return 0;
  });
}
