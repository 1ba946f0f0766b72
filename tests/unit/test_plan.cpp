// The layout planner (training/plan.h): hardware profiles, the state-memory count against the
// trainer's own, the enumeration against the config validator, and the model's predictions
// against measured steps (docs/planner/measured_h200.json).
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/config_load.h"
#include "config/validate.h"
#include "core/errors.h"
#include "training/plan.h"

namespace foldtron {
namespace {

Config reference(int64_t global_batch = 2) {
  return load_config({"mixtral-8x7b", "",
                      {"model.num_layers=4", "train.seq_length=4096",
                       "train.global_batch_size=" + std::to_string(global_batch), "train.micro_batch_size=2"}});
}

PlanLayout one_gpu(int64_t micro_batch = 2) {
  PlanLayout l;
  l.micro_batch = micro_batch;
  return l;
}

TEST(HardwareProfile, BuiltInProfilesLoadAndH100InheritsTheKernelRates) {
  EXPECT_EQ(builtin_hardware_names(), (std::vector<std::string>{"h100", "h200"}));
  const HardwareProfile h200 = builtin_hardware_profile("h200");
  EXPECT_EQ(h200.name, "NVIDIA H200");
  EXPECT_GT(h200.gemm.size(), 100u);
  EXPECT_FALSE(h200.grouped.empty());
  EXPECT_FALSE(h200.attention.empty());
  EXPECT_FALSE(h200.all_reduce_us.empty());
  const HardwareProfile h100 = builtin_hardware_profile("h100");
  EXPECT_LT(h100.memory_gib, 80.0);
  EXPECT_LT(h100.hbm_gbps, h200.hbm_gbps);
  EXPECT_EQ(h100.gemm.size(), h200.gemm.size());
  EXPECT_DOUBLE_EQ(h100.peak_tflops, h200.peak_tflops);
}

TEST(HardwareProfile, BadProfilesAreNamed) {
  const auto message = [](const std::string& text) {
    try {
      parse_hardware_profile(text, "my.json");
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("{not json").find("my.json is not valid JSON"), std::string::npos);
  EXPECT_NE(message("[1, 2]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(message(R"({"name": "x"})").find("no number 'memory_gib'"), std::string::npos);
  EXPECT_NE(message(R"({"base": "h200", "hbm_gbps": -3})").find("hbm_gbps is -3"), std::string::npos);
  EXPECT_NE(message(R"({"base": "h300"})").find("no hardware profile 'h300'"), std::string::npos);
  EXPECT_NE(message(R"({"base": "h200", "peak_bf16_tflops": 0})").find("not a finite positive number"), std::string::npos);
  // Without a base every section must be there: the links first among them.
  std::string no_links = R"({"name": "x", "memory_gib": 80, "peak_bf16_tflops": 989, "hbm_gbps": 3000,
                             "gpus_per_node": 8})";
  EXPECT_NE(message(no_links).find("has no 'links' object"), std::string::npos);
  EXPECT_NE(message(R"({"base": "h200", "gemm": []})").find("'gemm' is missing or empty"), std::string::npos);
  EXPECT_NE(message(R"({"base": "h200", "links": {"all_reduce_us": [[1, 2, 3]]}})").find("rows must be [bytes, microseconds]"),
            std::string::npos);
  // A base with one field replaced keeps the rest.
  const HardwareProfile slower = parse_hardware_profile(R"({"base": "h200", "hbm_gbps": 1000})", "slow.json");
  EXPECT_DOUBLE_EQ(slower.hbm_gbps, 1000);
  EXPECT_FALSE(slower.gemm.empty());
  EXPECT_THROW(builtin_hardware_profile("a100"), UsageError);
}

TEST(Plan, StateMemoryMatchesTheTrainersCount) {
  // The trainer's memory line on one H200 (2026-12-02): states 101.71 GiB = parameters 11.30
  // (bf16) + gradient buffers 22.60 (fp32) + optimizer 67.81 (fp32 main weights and moments).
  const HardwareProfile h200 = builtin_hardware_profile("h200");
  const PlanPrediction p = predict_layout(reference(), one_gpu(), 1, h200);
  EXPECT_NEAR(p.state_gib, 101.71, 0.05);
  // bf16 moments save 2 bytes on each of the two (measured 89.07 GiB peak against 111.67).
  Config bf16 = reference();
  bf16.train.adam_moments_dtype = DType::kBfloat16;
  EXPECT_NEAR(predict_layout(bf16, one_gpu(), 1, h200).state_gib, 101.71 - 6.07e9 * 4 / (1 << 30), 0.1);
  // bf16 main gradients save 2 bytes, and the optimizer's passes read half the gradient bytes.
  Config half_grads = reference();
  half_grads.train.main_grads_dtype = DType::kBfloat16;
  const PlanPrediction half = predict_layout(half_grads, one_gpu(), 1, h200);
  EXPECT_NEAR(half.state_gib, 101.71 - 6.07e9 * 2 / (1 << 30), 0.1);
  EXPECT_LT(half.step_s, p.step_s);
  // The distributed optimizer shards main weights and moments over data-parallel ranks; expert
  // parallelism splits the experts.
  PlanLayout ep2 = one_gpu();
  ep2.ep = 2, ep2.dp = 2, ep2.edp = 1;
  Config ep_config = reference(4);
  const PlanPrediction plain = predict_layout(ep_config, ep2, 2, h200);
  ep2.distributed_optimizer = true;
  const PlanPrediction sharded = predict_layout(ep_config, ep2, 2, h200);
  EXPECT_LT(sharded.state_gib, plain.state_gib);
  EXPECT_LT(plain.state_gib, p.state_gib * 0.6);
}

TEST(Plan, RecomputationTradesTimeForMemory) {
  const HardwareProfile h200 = builtin_hardware_profile("h200");
  const Config config = reference();
  PlanLayout none = one_gpu(), selective = one_gpu(), full = one_gpu();
  selective.recompute = Recompute::kSelective;
  full.recompute = Recompute::kFull;
  const PlanPrediction a = predict_layout(config, none, 1, h200), b = predict_layout(config, selective, 1, h200),
                       c = predict_layout(config, full, 1, h200);
  EXPECT_GT(a.activation_gib, b.activation_gib);
  EXPECT_GT(b.activation_gib, c.activation_gib);
  EXPECT_LT(a.step_s, b.step_s);
  EXPECT_LT(b.step_s, c.step_s);
  // The parts add up to the step.
  EXPECT_NEAR(c.compute_s + c.memory_bound_s + c.gaps_s + c.comm_s + c.bubble_s + c.optimizer_s, c.step_s, 1e-12);
}

TEST(Plan, EnumeratesOnlyLayoutsTheTrainerAcceptsAndHonoursPins) {
  const HardwareProfile h200 = builtin_hardware_profile("h200");
  const Config config = reference(16);
  const std::vector<PlanPrediction> plans = plan_layouts(config, 8, h200, PlanPins{});
  ASSERT_GT(plans.size(), 20u);
  std::set<std::string> seen;
  for (size_t i = 0; i < plans.size(); ++i) {
    const PlanLayout& l = plans[i].layout;
    EXPECT_TRUE(check_config(config_for_layout(config, l), 8).empty()) << describe_layout(l);
    EXPECT_EQ(l.tp * l.cp * l.pp * l.dp, 8);
    EXPECT_EQ(l.etp * l.ep * l.pp * l.edp, 8);
    EXPECT_TRUE(seen.insert(describe_layout(l)).second) << "listed twice: " << describe_layout(l);
    if (i > 0 && plans[i - 1].fits == plans[i].fits) {
      EXPECT_LE(plans[i - 1].step_s, plans[i].step_s);
    }
    if (i > 0) {
      EXPECT_TRUE(plans[i - 1].fits || !plans[i].fits) << "a layout that fits after one that does not";
    }
  }
  PlanPins pins;
  pins.tp = 2, pins.ep = 4, pins.micro_batch = 1;
  const std::vector<PlanPrediction> pinned = plan_layouts(config, 8, h200, pins);
  ASSERT_FALSE(pinned.empty());
  for (const PlanPrediction& p : pinned) {
    EXPECT_EQ(p.layout.tp, 2);
    EXPECT_EQ(p.layout.ep, 4);
    EXPECT_EQ(p.layout.micro_batch, 1);
  }
  // tp stays within a node unless pinned beyond it; a pinned distributed optimizer is in every layout.
  HardwareProfile small_nodes = h200;
  small_nodes.gpus_per_node = 2;
  for (const PlanPrediction& p : plan_layouts(config, 8, small_nodes, PlanPins{})) EXPECT_LE(p.layout.tp, 2);
  PlanPins wide;
  wide.tp = 4, wide.distributed_optimizer = true;
  const std::vector<PlanPrediction> across = plan_layouts(config, 8, small_nodes, wide);
  ASSERT_FALSE(across.empty());
  for (const PlanPrediction& p : across) {
    EXPECT_EQ(p.layout.tp, 4);
    EXPECT_TRUE(p.layout.distributed_optimizer);
  }
  // Pins outside the usual choices are tried: micro-batch 8, core-attention recomputation, and
  // the distributed optimizer pinned off.
  PlanPins unusual;
  unusual.micro_batch = 8, unusual.recompute = Recompute::kCoreAttn, unusual.distributed_optimizer = false;
  const std::vector<PlanPrediction> odd = plan_layouts(config, 8, h200, unusual);
  ASSERT_FALSE(odd.empty());
  for (const PlanPrediction& p : odd) {
    EXPECT_EQ(p.layout.micro_batch, 8);
    EXPECT_EQ(p.layout.recompute, Recompute::kCoreAttn);
    EXPECT_FALSE(p.layout.distributed_optimizer);
  }
  // A dense model has no expert grid to choose: each layout once.
  const Config dense = load_config({"tiny-dense", "", {"train.global_batch_size=8"}});
  std::set<std::string> dense_seen;
  for (const PlanPrediction& p : plan_layouts(dense, 4, h200, PlanPins{})) {
    EXPECT_EQ(p.layout.etp, 1);
    EXPECT_TRUE(dense_seen.insert(describe_layout(p.layout)).second) << describe_layout(p.layout);
  }
}

// Every measured run of docs/planner/measured_h200.json, predicted within its tolerance:
// `foldtron plan --check` prints the same table (a CLI test runs it).
TEST(Plan, PredictsTheMeasuredReferenceSteps) {
  const HardwareProfile h200 = builtin_hardware_profile("h200");
  struct Case {
    const char* name;
    Config config;
    PlanLayout layout;
    double step_s, peak_gib;
  };
  Config full = reference();
  PlanLayout full_layout = one_gpu();
  full_layout.recompute = full.model.recompute = Recompute::kFull;
  const std::vector<Case> cases{{"ref_mb2", reference(), one_gpu(), 0.2101, 111.67},
                                {"ref_gb16", reference(16), one_gpu(), 1.3484, 111.67},
                                {"ref_full", full, full_layout, 0.2619, 105.53}};
  for (const Case& c : cases) {
    const PlanPrediction p = predict_layout(c.config, c.layout, 1, h200);
    EXPECT_NEAR(p.step_s / c.step_s, 1.0, 0.10) << c.name << ": predicted " << p.step_s << " s";
    EXPECT_NEAR(p.memory_gib / c.peak_gib, 1.0, 0.10) << c.name << ": predicted " << p.memory_gib << " GiB";
  }
}

}  // namespace
}  // namespace foldtron
