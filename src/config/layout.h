// The parallel layout of a job: world size and the sizes of the folded grids, with the derived
// data-parallel sizes. Attention layers use TP x CP x DP x PP, MoE layers ETP x EP x EDP x PP,
// both over the same world ranks, laid out by the order string (fastest axis first).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/errors.h"

namespace foldtron {

struct ParallelConfig;

// The five axes of an order string. In the MoE grid `tp` means etp and `dp` means edp.
enum class Axis { kTp, kCp, kEp, kDp, kPp };
constexpr int kNumAxes = 5;

const char* axis_name(Axis axis);  // "tp", "cp", ...

// a*b*c, saturated at INT64_MAX: sizes beyond any world (a hostile config) give a product that
// divides nothing instead of wrapping (to 0, or negative).
inline int64_t saturated_product(int64_t a, int64_t b, int64_t c = 1) {
  int64_t ab = 0, abc = 0;
  if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc)) return INT64_MAX;
  return abc;
}

struct ParallelLayout {
  int64_t world = 1;
  int64_t tp = 1;
  int64_t cp = 1;
  int64_t pp = 1;
  int64_t ep = 1;
  int64_t etp = 1;
  std::string order = "tp-cp-ep-dp-pp";

  // tp*cp*pp and etp*ep*pp (ranks of one attention / expert data-parallel replica), saturated.
  int64_t attention_ranks() const { return saturated_product(tp, cp, pp); }
  int64_t expert_ranks() const { return saturated_product(etp, ep, pp); }
  int64_t dp() const { return world / attention_ranks(); }
  int64_t edp() const { return world / expert_ranks(); }
};

ParallelLayout layout_of(const ParallelConfig& parallel, int64_t world);

// Parses "tp-cp-ep-dp-pp": every axis exactly once. On failure appends a problem and returns {}.
std::vector<Axis> parse_order(const std::string& order, std::vector<ConfigProblem>& problems);

// Problems that make a layout impossible to lay out: non-positive sizes, world not divisible by
// tp*cp*pp or etp*ep*pp, a bad order string.
void check_layout(const ParallelLayout& layout, std::vector<ConfigProblem>& problems);

// Problems that make a valid layout unusable for training: the two grids must give the same
// pipeline groups, which holds when the order ends in pp or when edp == dp.
void check_layout_trainable(const ParallelLayout& layout, std::vector<ConfigProblem>& problems);

}  // namespace foldtron
