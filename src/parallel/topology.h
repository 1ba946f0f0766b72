// MoE Parallel Folding topology: where every world rank sits in the attention grid
// (TP x CP x DP x PP) and in the MoE grid (ETP x EP x EDP x PP), and every process group of both.
//
// Both grids lay ranks out by the same order string, first axis fastest. With the default
// tp-cp-ep-dp-pp:  attention rank = tp + TP*(cp + CP*(dp + DP*pp))      (ep is 1 there)
//                  MoE rank       = etp + ETP*(ep + EP*(edp + EDP*pp))  (cp is 1 there)
// A group of a kind is the set of ranks that differ only along that kind's axes. This is
// Megatron-Core's RankGenerator rule; shared/reference/folding_groups.json pins it.
// Pure arithmetic: needs no MPI, so `foldtron topology` runs anywhere.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "config/layout.h"

namespace foldtron {

enum class GroupKind {
  // attention grid
  kTp, kCp, kDp, kDpCp, kPp, kTpCp, kTpPp, kTpDpCp,
  // MoE grid
  kEtp, kEp, kEtpEp, kEdp, kExpertPp, kEtpEpPp,
};
constexpr int kNumGroupKinds = 14;

// "tp", "dp_cp", ..., "etp_ep_pp"; the MoE grid's pipeline group is "pp" within "moe".
const char* group_name(GroupKind kind);
bool is_moe_group(GroupKind kind);

struct RankCoords {
  int64_t tp = 0, cp = 0, dp = 0, pp = 0;  // attention grid
  int64_t etp = 0, ep = 0, edp = 0, epp = 0;  // MoE grid (epp equals pp for trainable layouts)
};

using RankGroup = std::vector<int64_t>;

class Topology {
 public:
  // Throws ConfigError listing every problem when the layout cannot be laid out.
  explicit Topology(ParallelLayout layout);

  const ParallelLayout& layout() const { return layout_; }
  int64_t world() const { return layout_.world; }
  RankCoords coords(int64_t rank) const;

  // Every group of a kind: ranks ascending within a group, groups ordered by their first rank.
  const std::vector<RankGroup>& groups(GroupKind kind) const { return groups_[static_cast<size_t>(kind)]; }
  // The group of a kind that holds `rank`.
  const RankGroup& group_of(GroupKind kind, int64_t rank) const;
  // Whether both grids give the same pipeline groups (required to train).
  bool pipeline_groups_agree() const { return groups(GroupKind::kPp) == groups(GroupKind::kExpertPp); }

  // The DESIGN.md JSON contract: {"attention": {...}, "moe": {...}, "dp": N, "edp": N}.
  std::string to_json() const;
  // A readable table: each rank's coordinates in both grids and its groups.
  std::string to_table() const;

 private:
  // Sizes of the five axes (Axis order) for one grid, and their strides under the order string.
  struct Grid {
    std::array<int64_t, kNumAxes> size{};
    std::array<int64_t, kNumAxes> stride{};
    int64_t coord(int64_t rank, Axis axis) const;
    std::vector<RankGroup> groups(std::initializer_list<Axis> axes, int64_t world) const;
  };
  Grid make_grid(std::array<int64_t, kNumAxes> size, const std::vector<Axis>& order) const;

  ParallelLayout layout_;
  Grid attention_;
  Grid moe_;
  std::array<std::vector<RankGroup>, kNumGroupKinds> groups_;
  std::array<std::vector<size_t>, kNumGroupKinds> group_index_;  // [kind][rank] -> group
};

}  // namespace foldtron
