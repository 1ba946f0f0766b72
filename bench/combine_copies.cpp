// The combine of dropless routing (each token's k expert outputs weighted and summed) at the
// reference shape, forward and forward+backward: the kernels of moe/combine_cuda.h against torch's
// operations, in one process on one GPU. Prints milliseconds per pass and the bytes each moves at
// the least (forward: the rows read and the tokens written; backward: the output gradient and the
// rows read, the rows' gradient written).
//   combine_copies [--tokens 16384] [--copies 2] [--hidden 4096] [--iters 50]
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "moe/dispatcher.h"
#include "gpu_timing.h"
#include "parallel/mpi_runtime.h"

namespace {

using namespace foldtron;

struct Options {
  int64_t tokens = 16384;  // micro-batch 4 x sequence 4096
  int64_t copies = 2;
  int64_t hidden = 4096;
  int iters = 50;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--tokens") {
      o.tokens = std::stoll(argv[i + 1]);
    } else if (flag == "--copies") {
      o.copies = std::stoll(argv[i + 1]);
    } else if (flag == "--hidden") {
      o.hidden = std::stoll(argv[i + 1]);
    } else if (flag == "--iters") {
      o.iters = std::stoi(argv[i + 1]);
    } else {
      throw UsageError("unknown flag " + flag, "use --tokens N, --copies K, --hidden H, --iters N");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  return run_guarded([&] {
    const Options o = parse(argc, argv);
    if (!torch::cuda::is_available()) throw UsageError("combine_copies needs a GPU", "run it on the GPU machine");
    const auto cuda = torch::TensorOptions().device(torch::kCUDA);
    const int64_t n = o.tokens, k = o.copies, h = o.hidden, p = n * k;
    const torch::Tensor order = torch::randperm(p, cuda.dtype(torch::kLong));
    const torch::Tensor rows_of_token = order.view({n, k});
    const torch::Tensor owners = torch::arange(n, cuda.dtype(torch::kLong)).repeat_interleave(k);
    const torch::Tensor token_index = torch::empty({p}, cuda.dtype(torch::kLong)).index_put_({order}, owners);
    const torch::Tensor rows = torch::randn({p, h}, cuda.dtype(torch::kBFloat16)).requires_grad_(true);
    const torch::Tensor weights = torch::rand({p}, cuda.dtype(torch::kFloat)).requires_grad_(true);
    const torch::Tensor dy = torch::randn({n, h}, cuda.dtype(torch::kBFloat16));
    const double gb_forward = static_cast<double>((p + n) * h * 2) / 1e9;
    const double gb_backward = static_cast<double>(3 * p * h * 2) / 1e9;
    fmt::print("combine: {} tokens x {} copies, hidden {}, bf16; at least {:.3f} GB forward, {:.3f} GB backward\n", n,
               k, h, gb_forward, gb_backward);
    for (const bool kernels : {true, false}) {
      const auto forward = [&] { return weighted_sum_copies(rows, weights, token_index, rows_of_token, kernels); };
      const double forward_ms = bench::time_ms(5, o.iters, [&] {
        torch::NoGradGuard no_grad;
        forward();
      });
      const double both_ms =
          bench::time_ms(5, o.iters, [&] { torch::autograd::grad({forward()}, {rows, weights}, {dy}); });
      fmt::print("RESULT {}: forward {:.3f} ms ({:.0f} GB/s), forward+backward {:.3f} ms (backward {:.0f} GB/s)\n",
                 kernels ? "kernels" : "torch", forward_ms, gb_forward / forward_ms * 1e3, both_ms,
                 gb_backward / (both_ms - forward_ms) * 1e3);
    }
    return 0;
  });
}
