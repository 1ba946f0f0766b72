// The experts' weight gradients at the reference's shapes (Mixtral-8x7B, micro-batch 4: 8 experts
// of 4,096 rows on average), one way at a time: the grouped CUTLASS kernel
// (moe/grouped_wgrad_cuda.h) for each tile shape and tile order, adding into fp32 (and the fastest
// writing it); one cuBLAS GEMM per expert adding into fp32 (foldtron's way without the kernel);
// torch's grouped bf16 GEMM (the PyTorch-native step's way, bf16 out). Prints TFLOP/s for the
// gate/up and down shapes and each result's largest relative difference from the per-expert
// GEMMs' (expert by expert).
//   grouped_wgrad [--experts 8] [--rows 4096] [--spread 0] [--hidden 4096] [--ffn 14336] [--iters 20]
// --spread s gives expert e rows * (1 - s + 2 s e / (E - 1)) rows, rounded down (about the same
// total), as a router's uneven counts. The last line is `RESULT {json}`.
#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include <c10/cuda/CUDAStream.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/torch_compat.h"
#include "moe/grouped_wgrad_cuda.h"
#include "gpu_timing.h"
#include "parallel/mpi_runtime.h"

namespace {

using namespace foldtron;

struct Options {
  int64_t experts = 8;
  int64_t rows = 4096;
  double spread = 0;
  int64_t hidden = 4096;
  int64_t ffn = 14336;
  int iters = 20;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 == argc) throw UsageError("flag " + flag + " has no value", "give every flag a value");
    const std::string value = argv[i + 1];
    if (flag == "--experts") {
      o.experts = std::stoll(value);
    } else if (flag == "--rows") {
      o.rows = std::stoll(value);
    } else if (flag == "--spread") {
      o.spread = std::stod(value);
    } else if (flag == "--hidden") {
      o.hidden = std::stoll(value);
    } else if (flag == "--ffn") {
      o.ffn = std::stoll(value);
    } else if (flag == "--iters") {
      o.iters = std::stoi(value);
    } else {
      throw UsageError("unknown flag " + flag,
                       "use --experts N, --rows N, --spread S, --hidden H, --ffn F, --iters N (each with a value)");
    }
  }
  if (o.experts < 2 || o.rows < 1 || o.spread < 0 || o.spread >= 1 || o.iters < 1) {
    throw UsageError("--experts must be at least 2, --rows and --iters at least 1, --spread in [0, 1)",
                     "give values in those ranges");
  }
  if (o.hidden <= 0 || o.ffn <= 0 || o.hidden % 8 != 0 || o.ffn % 8 != 0) {
    throw UsageError("--hidden and --ffn must be positive multiples of 8 (the kernel's 16-byte loads)",
                     "round them to a multiple of 8");
  }
  return o;
}

// The largest over experts of |a_e - b_e| / |b_e|.
double worst_relative(const torch::Tensor& a, const torch::Tensor& b) {
  double worst = 0;
  for (int64_t e = 0; e < a.size(0); ++e) {
    const torch::Tensor be = b[e].to(torch::kDouble);
    worst = std::max(worst, ((a[e].to(torch::kDouble) - be).norm() / be.norm()).item<double>());
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  return run_guarded([&] {
    const Options o = parse(argc, argv);
    if (!torch::cuda::is_available() || !grouped_wgrad_supported()) {
      throw UsageError("grouped_wgrad needs a Hopper GPU", "run it on the GPU machine");
    }
    const auto cuda = torch::TensorOptions().device(torch::kCUDA);
    std::vector<int64_t> counts;
    int64_t total = 0;
    for (int64_t e = 0; e < o.experts; ++e) {
      const double share = 1 - o.spread + 2 * o.spread * static_cast<double>(e) / static_cast<double>(o.experts - 1);
      counts.push_back(static_cast<int64_t>(static_cast<double>(o.rows) * share));
      total += counts.back();
    }
    const torch::Tensor row_ends = torch::tensor(counts).cumsum(0).to(torch::kInt).to(torch::kCUDA);
    nlohmann::json result;
    fmt::print("CUTLASS {}, {} experts, {} rows, counts {}\n", grouped_wgrad_cutlass_version(), o.experts, total,
               fmt::join(counts, " "));
    // gate/up: dy [R, 2F], x [R, h] -> [E, 2F, h]; down: dy [R, h], x [R, F] -> [E, h, F].
    for (const auto& [name, m, n] : {std::tuple<std::string, int64_t, int64_t>{"gate_up", 2 * o.ffn, o.hidden},
                                     std::tuple<std::string, int64_t, int64_t>{"down", o.hidden, o.ffn}}) {
      torch::manual_seed(1);
      const torch::Tensor dy = torch::randn({total, m}, cuda.dtype(torch::kBFloat16));
      const torch::Tensor x = torch::randn({total, n}, cuda.dtype(torch::kBFloat16));
      const torch::Tensor old = torch::randn({o.experts, m, n}, cuda.dtype(torch::kFloat));
      const double tflop = 2.0 * static_cast<double>(total * m * n) / 1e12;
      auto& shape = result[name];
      const auto report = [&](const std::string& way, double ms, double difference) {
        shape[way] = {{"ms", ms}, {"tflops", tflop / ms * 1e3}, {"relative_difference", difference}};
        fmt::print("{:8} {:58} {:8.3f} ms {:6.1f} TFLOP/s  relative difference {:.2e}\n", name, way, ms,
                   tflop / ms * 1e3, difference);
      };
      // One cuBLAS GEMM per expert adding into fp32: the reference of the others.
      torch::Tensor per_expert = old.clone();
      const auto add_per_expert = [&](const torch::Tensor& out) {
        int64_t start = 0;
        for (int64_t e = 0; e < o.experts; ++e) {
          torch_compat::mm_fp32_out(out[e], dy.narrow(0, start, counts[e]).t(), x.narrow(0, start, counts[e]), true);
          start += counts[e];
        }
      };
      add_per_expert(per_expert);
      const torch::Tensor reference = per_expert.clone();
      const double per_expert_ms = bench::time_ms(3, o.iters, [&] { add_per_expert(per_expert); });
      report("per-expert cuBLAS, adding fp32", per_expert_ms, 0);
      // Every tile shape in every order, adding; then the fastest also writing.
      std::vector<WgradConfig> configs;
      for (const WgradTiles tiles : kAllWgradTiles) {
        for (const bool along_n : {false, true}) {
          for (const int swizzle : {1, 2, 8}) configs.push_back({tiles, along_n, swizzle});
        }
      }
      size_t bytes = 0;
      for (const WgradConfig& config : configs) {
        bytes = std::max(bytes, grouped_wgrad_buffer_bytes(static_cast<int>(o.experts), config));
      }
      const torch::Tensor buffer = torch::empty({static_cast<int64_t>(bytes)}, cuda.dtype(torch::kByte));
      const auto grouped = [&](const torch::Tensor& out, bool accumulate, const WgradConfig& config) {
        grouped_wgrad_cuda(dy.data_ptr(), x.data_ptr(), row_ends.data_ptr<int32_t>(), out.data_ptr<float>(),
                           static_cast<int>(o.experts), m, n, accumulate, buffer.data_ptr(), config,
                           c10::cuda::getCurrentCUDAStream().stream());
      };
      WgradConfig fastest;
      double fastest_ms = 0;
      for (const WgradConfig& config : configs) {
        torch::Tensor out = old.clone();
        grouped(out, true, config);
        const double difference = worst_relative(out, reference);
        const double ms = bench::time_ms(3, o.iters, [&] { grouped(out, true, config); });
        report("grouped " + wgrad_config_name(config) + ", adding fp32", ms, difference);
        if (fastest_ms == 0 || ms < fastest_ms) {
          fastest = config;
          fastest_ms = ms;
        }
      }
      torch::Tensor out = old.clone();
      const double ms = bench::time_ms(3, o.iters, [&] { grouped(out, false, fastest); });
      report("grouped " + wgrad_config_name(fastest) + ", writing fp32", ms, worst_relative(out, reference - old));
      torch::Tensor bf16;
      const double bf16_ms = bench::time_ms(3, o.iters, [&] { bf16 = torch_compat::grouped_mm(dy.t(), x, row_ends); });
      report("torch grouped bf16, writing bf16", bf16_ms, worst_relative(bf16, reference - old));
    }
    fmt::print("RESULT {}\n", result.dump());
    return 0;
  });
}
