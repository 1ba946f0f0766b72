// parallel/topology: every case of shared/reference/folding_groups.json (Megatron-Core's
// RankGenerator) matches exactly, through the library and through `foldtron topology --json`;
// other layouts (odd world sizes, other orders) match an independent evaluation of DESIGN.md's
// formulas; invalid layouts are refused with the values named.
#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <gtest/gtest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "parallel/topology.h"
#include "run_command.h"

namespace foldtron {
namespace {

using nlohmann::json;

std::string reference_path() { return std::string(FOLDTRON_REFERENCE_DIR) + "/folding_groups.json"; }

json load_reference() {
  std::ifstream in(reference_path());
  if (!in) return json();
  return json::parse(in);
}

ParallelLayout layout_from(const json& config) {
  return ParallelLayout{config["world"], config["tp"], config["cp"], config["pp"],
                        config["ep"], config["etp"], config["order"]};
}

using testing::run_command;

TEST(Topology, MatchesMegatronReferenceForEveryCase) {
  const json reference = load_reference();
  if (reference.is_null()) GTEST_SKIP() << "reference vectors not found at " << reference_path();
  ASSERT_GE(reference["cases"].size(), 12u);
  for (const json& c : reference["cases"]) {
    const Topology topology(layout_from(c["config"]));
    json expected = c;
    expected.erase("config");
    EXPECT_EQ(json::parse(topology.to_json()), expected) << c["config"].dump();
  }
}

TEST(Topology, CliJsonMatchesReferenceForEveryCase) {
  const json reference = load_reference();
  if (reference.is_null()) GTEST_SKIP() << "reference vectors not found at " << reference_path();
  for (const json& c : reference["cases"]) {
    const json& k = c["config"];
    const std::string command = std::string(FOLDTRON_BINARY) + " topology --json --world " + k["world"].dump() +
                                " --tp " + k["tp"].dump() + " --cp " + k["cp"].dump() + " --pp " + k["pp"].dump() +
                                " --ep " + k["ep"].dump() + " --etp " + k["etp"].dump() + " --order " +
                                k["order"].get<std::string>();
    int code = -1;
    const std::string out = run_command(command + " 2>/dev/null", &code);  // stdout: the JSON alone
    ASSERT_EQ(code, 0) << command << "\n" << out;
    json expected = c;
    expected.erase("config");
    EXPECT_EQ(json::parse(out), expected) << command;
  }
}

// Independent evaluation of DESIGN.md's rule: enumerate coordinates, place each rank by
// rank = sum(coord[axis] * stride[axis]) over the order, and group ranks that share every
// coordinate outside the group's axes.
struct Brute {
  // sizes keyed by axis name; "tp" is etp and "dp" is edp in the MoE grid
  std::map<std::string, int64_t> size;
  std::vector<std::string> order;

  std::vector<RankGroup> groups(const std::set<std::string>& axes) const {
    std::map<std::vector<int64_t>, RankGroup> by_rest;
    const int64_t world = [&] {
      int64_t w = 1;
      for (const auto& [name, s] : size) w *= s;
      return w;
    }();
    for (int64_t index = 0; index < world; ++index) {
      // Decode `index` into coordinates in a fixed (alphabetical) enumeration, then place it.
      std::map<std::string, int64_t> coord;
      int64_t rest = index;
      for (const auto& [name, s] : size) {
        coord[name] = rest % s;
        rest /= s;
      }
      int64_t rank = 0, stride = 1;
      for (const std::string& axis : order) {
        rank += coord[axis] * stride;
        stride *= size.at(axis);
      }
      std::vector<int64_t> key;
      for (const auto& [name, c] : coord) key.push_back(axes.count(name) ? -1 : c);
      by_rest[key].push_back(rank);
    }
    std::vector<RankGroup> out;
    for (auto& [key, group] : by_rest) {
      std::sort(group.begin(), group.end());
      out.push_back(group);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

void expect_matches_brute_force(const ParallelLayout& l) {
  SCOPED_TRACE(fmt::format("world {} tp {} cp {} pp {} ep {} etp {} order {}", l.world, l.tp, l.cp, l.pp, l.ep, l.etp,
                           l.order));
  const Topology t(l);
  std::vector<std::string> order;
  std::string token;
  for (char ch : l.order + "-") {
    if (ch == '-') {
      order.push_back(token);
      token.clear();
    } else {
      token += ch;
    }
  }
  const Brute attention{{{"tp", l.tp}, {"cp", l.cp}, {"ep", 1}, {"dp", l.dp()}, {"pp", l.pp}}, order};
  const Brute moe{{{"tp", l.etp}, {"cp", 1}, {"ep", l.ep}, {"dp", l.edp()}, {"pp", l.pp}}, order};
  EXPECT_EQ(t.groups(GroupKind::kTp), attention.groups({"tp"}));
  EXPECT_EQ(t.groups(GroupKind::kCp), attention.groups({"cp"}));
  EXPECT_EQ(t.groups(GroupKind::kDp), attention.groups({"dp"}));
  EXPECT_EQ(t.groups(GroupKind::kDpCp), attention.groups({"dp", "cp"}));
  EXPECT_EQ(t.groups(GroupKind::kPp), attention.groups({"pp"}));
  EXPECT_EQ(t.groups(GroupKind::kTpCp), attention.groups({"tp", "cp"}));
  EXPECT_EQ(t.groups(GroupKind::kTpPp), attention.groups({"tp", "pp"}));
  EXPECT_EQ(t.groups(GroupKind::kTpDpCp), attention.groups({"tp", "dp", "cp"}));
  EXPECT_EQ(t.groups(GroupKind::kEtp), moe.groups({"tp"}));
  EXPECT_EQ(t.groups(GroupKind::kEp), moe.groups({"ep"}));
  EXPECT_EQ(t.groups(GroupKind::kEtpEp), moe.groups({"tp", "ep"}));
  EXPECT_EQ(t.groups(GroupKind::kEdp), moe.groups({"dp"}));
  EXPECT_EQ(t.groups(GroupKind::kExpertPp), moe.groups({"pp"}));
  EXPECT_EQ(t.groups(GroupKind::kEtpEpPp), moe.groups({"tp", "ep", "pp"}));
  // Every rank's coordinates put it in the groups that hold it.
  for (int64_t rank = 0; rank < l.world; ++rank) {
    const RankCoords c = t.coords(rank);
    for (int k = 0; k < kNumGroupKinds; ++k) {
      const RankGroup& g = t.group_of(static_cast<GroupKind>(k), rank);
      EXPECT_TRUE(std::binary_search(g.begin(), g.end(), rank));
    }
    EXPECT_EQ(t.group_of(GroupKind::kTp, rank)[static_cast<size_t>(c.tp)], rank);
    EXPECT_EQ(t.group_of(GroupKind::kEp, rank)[static_cast<size_t>(c.ep)], rank);
  }
}

TEST(Topology, DefaultOrderFollowsDesignFormula) {
  // rank = tp + TP*(cp + CP*(dp + DP*pp)) and rank = etp + ETP*(ep + EP*(edp + EDP*pp)).
  const Topology t(ParallelLayout{24, 2, 3, 2, 3, 2, "tp-cp-ep-dp-pp"});
  const ParallelLayout& l = t.layout();
  for (int64_t rank = 0; rank < 24; ++rank) {
    const RankCoords c = t.coords(rank);
    EXPECT_EQ(c.tp + l.tp * (c.cp + l.cp * (c.dp + l.dp() * c.pp)), rank);
    EXPECT_EQ(c.etp + l.etp * (c.ep + l.ep * (c.edp + l.edp() * c.epp)), rank);
    EXPECT_EQ(c.pp, c.epp);
  }
  EXPECT_TRUE(t.pipeline_groups_agree());
}

TEST(Topology, OtherLayoutsMatchTheRule) {
  const std::vector<ParallelLayout> layouts{
      {6, 1, 1, 1, 3, 2, "tp-cp-ep-dp-pp"},   {12, 2, 1, 3, 2, 1, "tp-cp-ep-dp-pp"},
      {24, 2, 3, 2, 3, 2, "tp-cp-ep-dp-pp"},  {18, 3, 1, 1, 3, 3, "tp-cp-ep-dp-pp"},
      {32, 2, 2, 2, 4, 2, "tp-cp-ep-dp-pp"},  {16, 2, 1, 2, 2, 2, "tp-cp-ep-pp-dp"},
      {16, 2, 2, 2, 2, 1, "tp-dp-cp-ep-pp"},  {8, 2, 2, 1, 4, 1, "pp-dp-ep-cp-tp"},
      {30, 1, 5, 1, 3, 1, "cp-tp-ep-dp-pp"},  {1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"},
  };
  for (const ParallelLayout& layout : layouts) expect_matches_brute_force(layout);
}

TEST(Topology, PipelineGroupsDisagreeOnlyWhenPpIsNotLastAndEdpDiffers) {
  EXPECT_FALSE(Topology(ParallelLayout{16, 2, 1, 2, 2, 2, "tp-cp-ep-pp-dp"}).pipeline_groups_agree());
  EXPECT_TRUE(Topology(ParallelLayout{16, 2, 1, 2, 2, 1, "tp-cp-ep-pp-dp"}).pipeline_groups_agree());
}

TEST(Topology, InvalidLayoutsNameTheValues) {
  try {
    Topology(ParallelLayout{6, 4, 1, 1, 1, 1, "tp-cp-ep-dp-pp"});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("world size 6 is not divisible by tp*cp*pp = 4 (tp 4, cp 1, pp 1)"),
              std::string::npos);
  }
  try {
    Topology(ParallelLayout{8, 1, 1, 1, 3, 1, "tp-cp-ep-dp"});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.problems().size(), 2u) << e.what();
  }
  EXPECT_THROW(Topology(ParallelLayout{8, 0, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), ConfigError);
}

}  // namespace
}  // namespace foldtron
