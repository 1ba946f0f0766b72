// Integer helpers for shapes and partitions, and the infinity of score masks.
#pragma once

#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "core/errors.h"

namespace foldtron {

// numerator / denominator, which must divide exactly (an internal invariant: user-facing
// divisibility is checked by config validation first, with a message naming the fields).
inline int64_t divide_exact(int64_t numerator, int64_t denominator, const char* what = "") {
  FT_CHECK(denominator != 0 && numerator % denominator == 0,
           std::string(what) + ": " + std::to_string(numerator) + " is not divisible by " +
               std::to_string(denominator));
  return numerator / denominator;
}

// Masked scores are -kInf.
inline constexpr double kInf = std::numeric_limits<double>::infinity();

inline int64_t ceil_div(int64_t numerator, int64_t denominator) {
  return (numerator + denominator - 1) / denominator;
}

// The sum of counts or sizes (rows per rank, tokens per expert).
inline int64_t sum_of(const std::vector<int64_t>& values) {
  return std::accumulate(values.begin(), values.end(), int64_t{0});
}

}  // namespace foldtron
