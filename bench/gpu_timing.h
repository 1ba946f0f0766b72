// Timing for the GPU benchmark programs: milliseconds per call of an operation, after warm-up,
// with the device synchronized around the timed calls (for operations of a millisecond or more;
// host time between launches counts, as it does in a training step).
#pragma once

#include <chrono>

#include <torch/cuda.h>

namespace foldtron::bench {

template <typename Op>
double time_ms(int warmup, int iters, Op op) {
  for (int i = 0; i < warmup; ++i) op();
  torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / iters;
}

}  // namespace foldtron::bench
