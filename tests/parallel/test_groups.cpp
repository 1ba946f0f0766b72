// ProcessGroups: each communicator holds exactly the ranks of this rank's group in the topology
// (checked by gathering world ranks over it), for several folded layouts of the job's world
// size; and the RNG streams: model-parallel dropout differs across tp ranks and matches across
// dp ranks, reproducibly from the seed.
#include "mpi_test.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"

namespace foldtron::testing {
namespace {

std::vector<ParallelLayout> layouts_for(int world) {
  std::vector<ParallelLayout> out{{world, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}};
  if (world % 2 == 0) {
    out.push_back({world, 2, 1, 1, world, 1, "tp-cp-ep-dp-pp"});
    out.push_back({world, 1, 2, 1, 2, 1, "tp-cp-ep-dp-pp"});
  }
  if (world % 4 == 0) out.push_back({world, 2, 1, 2, 2, 1, "tp-cp-ep-dp-pp"});
  if (world % 8 == 0) {
    out.push_back({world, 2, 2, 2, 2, 1, "tp-cp-ep-dp-pp"});
    out.push_back({world, 2, 1, 2, 2, 2, "tp-cp-ep-pp-dp"});
    out.push_back({world, 2, 1, 1, 4, 2, "tp-cp-ep-dp-pp"});
  }
  return out;
}

TEST(ProcessGroups, CommunicatorsHoldTheTopologyGroups) {
  for (const ParallelLayout& layout : layouts_for(world_size())) {
    SCOPED_TRACE(fmt::format("tp {} cp {} pp {} ep {} etp {} {}", layout.tp, layout.cp, layout.pp, layout.ep,
                             layout.etp, layout.order));
    const Topology topology(layout);
    ProcessGroups groups(topology, comm_options());
    EXPECT_EQ(groups.world_rank(), world_rank());
    for (int k = 0; k < kNumGroupKinds; ++k) {
      const auto kind = static_cast<GroupKind>(k);
      Communicator& comm = groups.get(kind);
      const RankGroup& expected = topology.group_of(kind, world_rank());
      EXPECT_EQ(comm.world_ranks(), expected) << group_name(kind);
      std::vector<int64_t> members;
      for (const auto& r : comm.all_gather_ints({world_rank()})) members.push_back(r[0]);
      EXPECT_EQ(members, expected) << group_name(kind);
      EXPECT_EQ(expected[static_cast<size_t>(comm.rank())], world_rank()) << group_name(kind);
      // A collective on the group sums exactly its members' ranks.
      torch::Tensor value = torch::full({1}, static_cast<double>(world_rank()), torch::kDouble).to(device());
      comm.all_reduce(value);
      double expected_sum = 0;
      for (int64_t r : expected) expected_sum += static_cast<double>(r);
      EXPECT_DOUBLE_EQ(value.cpu().item<double>(), expected_sum) << group_name(kind);
    }
    EXPECT_EQ(groups.world().size(), world_size());
  }
}

TEST(ProcessGroups, WrongWorldSizeIsAConfigError) {
  const Topology topology(ParallelLayout{world_size() + 1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"});
  EXPECT_THROW(ProcessGroups(topology, comm_options()), ConfigError);
}

TEST(Rng, ModelParallelDropoutDiffersOverTpAndMatchesOverDp) {
  if (world_size() % 2 != 0) GTEST_SKIP() << "needs tp 2";
  const Topology topology(ParallelLayout{world_size(), 2, 1, 1, 1, 1, "tp-cp-ep-dp-pp"});
  ProcessGroups groups(topology, comm_options());
  RngTracker rng(1234, groups.coords(), device());
  torch::Tensor ones = torch::ones({64}, torch::TensorOptions().device(device()));
  torch::Tensor tp_mask = rng.dropout(ones, 0.5, RngStream::kModelParallel);
  torch::Tensor data_mask = rng.dropout(ones, 0.5, RngStream::kData);
  // Reproducible from the seed.
  RngTracker again(1234, groups.coords(), device());
  EXPECT_TRUE(close(again.dropout(ones, 0.5, RngStream::kModelParallel), tp_mask, 0, 0));
  // Scaled by 1/(1-p), dropping about half.
  EXPECT_TRUE(((tp_mask == 0) | (tp_mask == 2)).all().item<bool>());
  const auto tp_masks = groups.tp().all_gather(tp_mask.reshape({1, 64}));
  EXPECT_FALSE(torch::equal(tp_masks[0], tp_masks[1])) << "tp ranks drew the same model-parallel mask";
  const auto data_masks = groups.tp().all_gather(data_mask.reshape({1, 64}));
  EXPECT_TRUE(torch::equal(data_masks[0], data_masks[1])) << "tp ranks drew different data-stream masks";
  if (groups.dp().size() > 1) {
    const auto dp_masks = groups.dp().all_gather(tp_mask.reshape({1, 64}));
    for (int64_t r = 1; r < groups.dp().size(); ++r) EXPECT_TRUE(torch::equal(dp_masks[0], dp_masks[r]));
  }
}

}  // namespace
}  // namespace foldtron::testing
