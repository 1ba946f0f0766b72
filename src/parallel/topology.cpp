// Folding topology arithmetic (see topology.h).
#include "parallel/topology.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/text.h"

namespace foldtron {
namespace {

constexpr std::array<const char*, kNumGroupKinds> kGroupNames{
    "tp", "cp", "dp", "dp_cp", "pp", "tp_cp", "tp_pp", "tp_dp_cp", "etp", "ep", "etp_ep", "edp", "pp", "etp_ep_pp"};

std::string format_group(const RankGroup& group) {
  std::vector<std::string> ranks;
  for (int64_t r : group) ranks.push_back(std::to_string(r));
  return join(ranks, ",");
}

}  // namespace

const char* group_name(GroupKind kind) { return kGroupNames.at(static_cast<size_t>(kind)); }
bool is_moe_group(GroupKind kind) { return static_cast<int>(kind) >= static_cast<int>(GroupKind::kEtp); }

int64_t Topology::Grid::coord(int64_t rank, Axis axis) const {
  const auto a = static_cast<size_t>(axis);
  return (rank / stride[a]) % size[a];
}

std::vector<RankGroup> Topology::Grid::groups(std::initializer_list<Axis> axes, int64_t world) const {
  // Ranks that agree on every axis outside `axes` share a group: key them by that remainder.
  std::map<int64_t, RankGroup> by_key;
  for (int64_t rank = 0; rank < world; ++rank) {
    int64_t key = rank;
    for (Axis axis : axes) key -= coord(rank, axis) * stride[static_cast<size_t>(axis)];
    by_key[key].push_back(rank);  // ranks arrive ascending
  }
  std::vector<RankGroup> out;
  for (auto& [key, group] : by_key) out.push_back(std::move(group));
  std::sort(out.begin(), out.end());
  return out;
}

Topology::Grid Topology::make_grid(std::array<int64_t, kNumAxes> size, const std::vector<Axis>& order) const {
  Grid grid;
  grid.size = size;
  int64_t stride = 1;
  for (Axis axis : order) {
    grid.stride[static_cast<size_t>(axis)] = stride;
    stride *= size[static_cast<size_t>(axis)];
  }
  FT_CHECK(stride == layout_.world, "grid does not cover the world");
  return grid;
}

Topology::Topology(ParallelLayout layout) : layout_(std::move(layout)) {
  std::vector<ConfigProblem> problems;
  check_layout(layout_, problems);
  if (!problems.empty()) throw ConfigError(std::move(problems));
  const std::vector<Axis> order = parse_order(layout_.order, problems);
  const ParallelLayout& l = layout_;
  // Axis order of the arrays: tp, cp, ep, dp, pp.
  attention_ = make_grid({l.tp, l.cp, 1, l.dp(), l.pp}, order);
  moe_ = make_grid({l.etp, 1, l.ep, l.edp(), l.pp}, order);

  using A = Axis;
  const int64_t w = l.world;
  auto set = [&](GroupKind kind, std::vector<RankGroup> groups) {
    const auto k = static_cast<size_t>(kind);
    group_index_[k].assign(static_cast<size_t>(w), 0);
    for (size_t g = 0; g < groups.size(); ++g) {
      for (int64_t rank : groups[g]) group_index_[k][static_cast<size_t>(rank)] = g;
    }
    groups_[k] = std::move(groups);
  };
  set(GroupKind::kTp, attention_.groups({A::kTp}, w));
  set(GroupKind::kCp, attention_.groups({A::kCp}, w));
  set(GroupKind::kDp, attention_.groups({A::kDp}, w));
  set(GroupKind::kDpCp, attention_.groups({A::kDp, A::kCp}, w));
  set(GroupKind::kPp, attention_.groups({A::kPp}, w));
  set(GroupKind::kTpCp, attention_.groups({A::kTp, A::kCp}, w));
  set(GroupKind::kTpPp, attention_.groups({A::kTp, A::kPp}, w));
  set(GroupKind::kTpDpCp, attention_.groups({A::kTp, A::kDp, A::kCp}, w));
  set(GroupKind::kEtp, moe_.groups({A::kTp}, w));
  set(GroupKind::kEp, moe_.groups({A::kEp}, w));
  set(GroupKind::kEtpEp, moe_.groups({A::kTp, A::kEp}, w));
  set(GroupKind::kEdp, moe_.groups({A::kDp}, w));
  set(GroupKind::kExpertPp, moe_.groups({A::kPp}, w));
  set(GroupKind::kEtpEpPp, moe_.groups({A::kTp, A::kEp, A::kPp}, w));
}

RankCoords Topology::coords(int64_t rank) const {
  FT_CHECK(rank >= 0 && rank < world(), fmt::format("rank {} outside world {}", rank, world()));
  RankCoords c;
  c.tp = attention_.coord(rank, Axis::kTp);
  c.cp = attention_.coord(rank, Axis::kCp);
  c.dp = attention_.coord(rank, Axis::kDp);
  c.pp = attention_.coord(rank, Axis::kPp);
  c.etp = moe_.coord(rank, Axis::kTp);
  c.ep = moe_.coord(rank, Axis::kEp);
  c.edp = moe_.coord(rank, Axis::kDp);
  c.epp = moe_.coord(rank, Axis::kPp);
  return c;
}

const RankGroup& Topology::group_of(GroupKind kind, int64_t rank) const {
  FT_CHECK(rank >= 0 && rank < world(), fmt::format("rank {} outside world {}", rank, world()));
  const auto k = static_cast<size_t>(kind);
  return groups_[k][group_index_[k][static_cast<size_t>(rank)]];
}

std::string Topology::to_json() const {
  nlohmann::json attention = nlohmann::json::object();
  nlohmann::json moe = nlohmann::json::object();
  for (int k = 0; k < kNumGroupKinds; ++k) {
    const auto kind = static_cast<GroupKind>(k);
    (is_moe_group(kind) ? moe : attention)[group_name(kind)] = groups(kind);
  }
  nlohmann::json out{{"attention", attention}, {"moe", moe}, {"dp", layout_.dp()}, {"edp", layout_.edp()}};
  return out.dump();
}

std::string Topology::to_table() const {
  const ParallelLayout& l = layout_;
  std::string out = fmt::format(
      "world {}  order {}\n"
      "attention grid: tp {} x cp {} x dp {} x pp {}\n"
      "moe grid:       etp {} x ep {} x edp {} x pp {}\n\n",
      l.world, l.order, l.tp, l.cp, l.dp(), l.pp, l.etp, l.ep, l.edp(), l.pp);
  const GroupKind shown[] = {GroupKind::kTp, GroupKind::kCp, GroupKind::kDp, GroupKind::kPp,
                             GroupKind::kEtp, GroupKind::kEp, GroupKind::kEdp};
  out += fmt::format("{:>5} | {:>3} {:>3} {:>3} {:>3} | {:>3} {:>3} {:>3} {:>3} |", "rank", "tp", "cp", "dp", "pp",
                     "etp", "ep", "edp", "pp");
  for (GroupKind kind : shown) out += fmt::format(" {:<12}", std::string(group_name(kind)) + " group");
  out += "\n";
  for (int64_t rank = 0; rank < world(); ++rank) {
    const RankCoords c = coords(rank);
    out += fmt::format("{:>5} | {:>3} {:>3} {:>3} {:>3} | {:>3} {:>3} {:>3} {:>3} |", rank, c.tp, c.cp, c.dp, c.pp,
                       c.etp, c.ep, c.edp, c.epp);
    for (GroupKind kind : shown) out += fmt::format(" {:<12}", format_group(group_of(kind, rank)));
    out += "\n";
  }
  return out;
}

}  // namespace foldtron
