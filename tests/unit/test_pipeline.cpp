// Pipeline schedules: every rank's order runs each micro-batch's forward and backward through
// each of its chunks exactly once, every message is received in the tick it is sent, the
// simulated pipeline takes the ideal number of ticks for 1F1B and interleaved 1F1B, activations
// alive per rank stay within the schedule's bound, and orders that cannot finish are reported.
// (Validation refuses micro-batch counts the interleaved schedule cannot take: test_config.)
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/errors.h"
#include "pipeline/schedule.h"

namespace foldtron {
namespace {

struct Shape {
  int64_t pp, vpp, micro;
};

TEST(PipelineSchedule, EveryOperationOnceAndEveryMessageMatchedInItsTick) {
  for (const Shape& s : {Shape{1, 1, 1}, Shape{1, 1, 4}, Shape{2, 1, 1}, Shape{2, 1, 3}, Shape{2, 1, 8},
                         Shape{4, 1, 2}, Shape{4, 1, 9}, Shape{2, 2, 2}, Shape{2, 2, 6}, Shape{4, 2, 4},
                         Shape{4, 3, 8}, Shape{3, 2, 6}, Shape{8, 2, 16}}) {
    SCOPED_TRACE(fmt::format("pp {} vpp {} micro-batches {}", s.pp, s.vpp, s.micro));
    const auto plan = plan_pipeline(s.pp, s.vpp, s.micro, false);
    ASSERT_EQ(static_cast<int64_t>(plan.size()), s.pp);
    const size_t ticks = plan[0].size();
    // Ideal unit-time pipeline: 2 * (micro-batches * vpp + pp - 1) ticks (the bubble shrinks by vpp).
    EXPECT_EQ(static_cast<int64_t>(ticks), 2 * (s.micro * s.vpp + s.pp - 1));
    for (int64_t r = 0; r < s.pp; ++r) {
      const auto& mine = plan[static_cast<size_t>(r)];
      ASSERT_EQ(mine.size(), ticks);
      std::set<std::tuple<bool, int64_t, int64_t>> seen;
      int64_t alive = 0, most_alive = 0;
      for (size_t t = 0; t < ticks; ++t) {
        const PipelineTick& tick = mine[t];
        if (tick.has_op) {
          EXPECT_TRUE(seen.insert({tick.op.forward, tick.op.micro, tick.op.chunk}).second) << "op ran twice";
          if (!tick.op.forward) {
            EXPECT_TRUE(seen.count({true, tick.op.micro, tick.op.chunk})) << "backward before its forward";
          }
          alive += tick.op.forward ? 1 : -1;
          most_alive = std::max(most_alive, alive);
        }
        EXPECT_LE(tick.sends.size(), 1u);
        for (const PipelineMessage& send : tick.sends) {
          const auto& theirs = plan[static_cast<size_t>(send.peer)][t].recvs;
          const int64_t matched = std::count_if(theirs.begin(), theirs.end(), [&](const PipelineMessage& m) {
            return m.peer == r && m.activation == send.activation && m.micro == send.micro;
          });
          EXPECT_EQ(matched, 1) << "send at tick " << t << " from rank " << r << " to " << send.peer;
        }
      }
      EXPECT_EQ(static_cast<int64_t>(seen.size()), 2 * s.micro * s.vpp);
      EXPECT_EQ(alive, 0);
      // 1F1B keeps at most pp - r micro-batches alive (no pipelining: one).
      const int64_t bound = s.vpp == 1 ? std::min(s.pp - r, s.micro)
                                       : std::min((s.pp - r - 1) * 2 + (s.vpp - 1) * s.pp + 1, s.micro * s.vpp);
      EXPECT_LE(most_alive, bound) << "rank " << r;
    }
  }
}

TEST(PipelineSchedule, ForwardOnlyPassesEachMicroBatchThroughEveryStage) {
  const auto plan = plan_pipeline(4, 2, 1, true);
  std::vector<int64_t> stage_order;
  for (size_t t = 0; t < plan[0].size(); ++t) {
    for (int64_t r = 0; r < 4; ++r) {
      const PipelineTick& tick = plan[static_cast<size_t>(r)][t];
      if (!tick.has_op) continue;
      EXPECT_TRUE(tick.op.forward);
      stage_order.push_back(tick.op.chunk * 4 + r);
    }
  }
  EXPECT_EQ(stage_order, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(PipelineSchedule, NoPipeliningAlternatesForwardAndBackward) {
  const auto order = pipeline_order(1, 1, 3, 0, false);
  ASSERT_EQ(order.size(), 6u);
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(order[i].forward, i % 2 == 0);
    EXPECT_EQ(order[i].micro, static_cast<int64_t>(i / 2));
  }
}

TEST(PipelineSchedule, AnOrderThatCannotFinishIsReportedNotRun) {
  // Rank 0 wants micro-batch 1's gradient before micro-batch 0's: rank 1 runs 0 first.
  const std::vector<std::vector<PipelineOp>> orders{
      {{true, 0, 0}, {true, 1, 0}, {false, 1, 0}, {false, 0, 0}},
      {{true, 0, 0}, {false, 0, 0}, {true, 1, 0}, {false, 1, 0}}};
  EXPECT_NO_THROW(plan_pipeline(orders, 2, 1, 2, false));
  const std::vector<std::vector<PipelineOp>> stuck{
      {{true, 0, 0}, {false, 0, 0}, {true, 1, 0}, {false, 1, 0}},
      {{true, 1, 0}, {false, 1, 0}, {true, 0, 0}, {false, 0, 0}}};
  try {
    plan_pipeline(stuck, 2, 1, 2, false);
    FAIL() << "expected an InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot finish"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace foldtron
