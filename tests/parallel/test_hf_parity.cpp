// Hugging Face parity: the tiny Mixtral, Qwen2-MoE and Llama checkpoints of
// ../shared/reference/hf, imported into every layout of the job's world size that the model
// allows (tp, ep, etp, sequence parallelism, folded), reproduce transformers' logits, every
// hidden state, the loss and every gradient of the loss within 1e-4 (relative to each tensor's
// largest entry). Layouts with dp larger than the batch of 2 exercise ranks without a sequence.
// Pipeline layouts (pp 2, one layer per stage) check logits, hidden states and loss; their
// gradients are checked by the training equivalence tests (backward needs the schedule).
#include <filesystem>
#include <iostream>

#include <fmt/ranges.h>

#include "checkpoint/hf_config.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/safetensors.h"
#include "config/validate.h"
#include "models/decoder_lm.h"
#include "mpi_test.h"
#include "optim/param_buffer.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"
#include "training/forward.h"

namespace foldtron::testing {
namespace {

const std::string kReference = FOLDTRON_REFERENCE_DIR "/hf/";

double worst_error = 0;  // largest max|a-b| / max|b| seen, printed at the end

::testing::AssertionResult near(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-6);
  if (a.sizes() == b.sizes()) {
    worst_error = std::max(worst_error, (a.detach().cpu().to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() / scale);
  }
  return close(a, b, 1e-4, 1e-4 * scale);
}

// The full gradient of a parameter from every rank's shard: gathered over its split group
// (tp, or etp for experts) by its layout, then experts over ep.
torch::Tensor full_grad(const torch::Tensor& param, const ParamInfo& info, ProcessGroups& groups) {
  torch::Tensor grad = param.grad().detach();
  Communicator& split_group = info.expert ? groups.etp() : groups.tp();
  if (info.tp_split_dim >= 0 && split_group.size() > 1) {
    const torch::Tensor all = split_group.all_gather(grad.contiguous());  // shards stacked on dim 0
    grad = unshard(all.chunk(split_group.size(), 0), info);
  }
  if (info.expert && groups.ep().size() > 1) grad = groups.ep().all_gather(grad.contiguous());  // [E, ...]
  return grad.cpu();
}

struct Layout {
  int64_t tp, ep, etp;
  bool sp;
  int64_t cp = 1;
  CpCommType cp_comm_type = CpCommType::kAllGather;
  int64_t pp = 1;
};

// False when the model does not split that way (heads, experts); other layouts cover it.
bool check_model(const std::string& model_name, const Layout& layout) {
  const std::string dir = kReference + model_name;
  Config config = hf_model_config(dir);
  config.parallel.tp = layout.tp;
  config.parallel.ep = layout.ep;
  config.parallel.etp = layout.etp;
  config.parallel.sequence_parallel = layout.sp;
  config.parallel.cp = layout.cp;
  config.parallel.cp_comm_type = layout.cp_comm_type;
  config.parallel.pp = layout.pp;
  config.moe.router_fp64 = true;
  const int world = world_size();
  const int64_t dp = world / (layout.tp * layout.cp * layout.pp);
  config.train.global_batch_size = dp;
  config.train.micro_batch_size = 1;
  try {
    validate_config(config, world);
  } catch (const ConfigError&) {
    return false;
  }
  SCOPED_TRACE(fmt::format("{} world {} tp {} ep {} etp {} sp {} cp {} pp {}", model_name, world, layout.tp,
                           layout.ep, layout.etp, layout.sp, layout.cp, layout.pp));
  ProcessGroups groups(Topology(layout_of(config.parallel, world)), comm_options());
  RngTracker rng(1, groups.coords(), device());
  ParamRegistry registry;
  const bool sp = layout.sp && layout.tp > 1;
  const LayerContext ctx{&groups.tp(), sp, 1, device(), torch::kFloat, &rng, &registry, &groups, layout.cp_comm_type};
  DecoderLM model(ctx, config.model, config.moe,
                  ModelPart::of(config.parallel, config.model.num_layers, groups.pp().rank()));
  model.eval();  // no dropout, no router losses: the stored gradients are those of ce_loss alone
  load_hf_weights(model, registry, HfCheckpoint(dir));
  ParamBuffers buffers(model.parameters(), registry, groups);

  const SafetensorsFile reference(dir + "/reference.safetensors");
  const ForwardResult result = forward_batch(model, groups, reference.load("input_ids"), device(), sp, true);
  EXPECT_TRUE(near(result.logits, reference.load("logits"))) << "logits";
  const double ce = reference.load("ce_loss").item<double>();
  EXPECT_NEAR(result.loss_value, ce, 1e-4 * ce) << "loss";
  worst_error = std::max(worst_error, std::abs(result.loss_value - ce) / ce);
  EXPECT_EQ(static_cast<int64_t>(result.hidden_states.size()), config.model.num_layers + 1);
  for (size_t i = 0; i < result.hidden_states.size(); ++i) {
    EXPECT_TRUE(near(result.hidden_states[i], reference.load(fmt::format("hidden_states.{}", i)))) << "hidden state " << i;
  }

  if (layout.pp > 1) return true;
  result.loss.backward();
  buffers.finish_grad_sync();
  // The reference stores the gradients of some parameters (layer 0, embeddings, output layer):
  // every one of them must be compared.
  size_t stored = 0, compared = 0;
  for (const std::string& name : reference.names()) stored += name.rfind("grad.", 0) == 0 ? 1 : 0;
  for (const auto& item : model.named_parameters()) {
    // Gathering is collective: every rank gathers every parameter, stored or not.
    const torch::Tensor grad = full_grad(item.value(), registry.info(item.value()), groups);
    const std::string name = "grad." + hf_name(item.key());
    if (!reference.has(name)) continue;
    EXPECT_TRUE(near(grad, reference.load(name))) << name;
    ++compared;
  }
  EXPECT_EQ(compared, stored) << "stored gradients without a matching parameter";
  return true;
}

TEST(HfParity, EveryLayoutMatchesTransformers) {
  if (!std::filesystem::exists(kReference)) GTEST_SKIP() << "no reference vectors at " << kReference;
  const std::vector<Layout> layouts{{1, 1, 1, false}, {2, 1, 2, false}, {2, 1, 2, true}, {1, 2, 1, false},
                                    {1, 4, 1, false}, {2, 2, 1, true},  {2, 4, 1, true}, {2, 4, 1, false},
                                    {2, 2, 2, true},  {1, 8, 1, false},
                                    // Context parallelism: all-gather and Ulysses attention.
                                    {1, 1, 1, false, 2}, {2, 1, 2, true, 2, CpCommType::kAllToAll},
                                    {1, 2, 1, false, 2, CpCommType::kAllToAll}, {2, 4, 1, true, 2},
                                    {1, 1, 1, false, 4}, {1, 4, 2, false, 4},
                                    {1, 1, 1, false, 2, CpCommType::kP2P}, {2, 4, 1, true, 2, CpCommType::kP2P},
                                    {1, 2, 1, false, 4, CpCommType::kP2P},
                                    // Pipeline parallelism (forward only), with every other dimension.
                                    {1, 1, 1, false, 1, CpCommType::kAllGather, 2},
                                    {2, 2, 1, true, 1, CpCommType::kAllGather, 2},
                                    {1, 2, 1, false, 2, CpCommType::kP2P, 2},
                                    {2, 2, 1, true, 2, CpCommType::kAllGather, 2},
                                    {1, 4, 1, false, 2, CpCommType::kAllToAll, 2}};
  for (const std::string model : {"mixtral-tiny", "qwen2moe-tiny", "llama-tiny"}) {
    std::vector<std::string> checked;
    for (const Layout& layout : layouts) {
      if (check_model(model, layout)) {
        checked.push_back(fmt::format("tp{} ep{} etp{}{}{}{}", layout.tp, layout.ep, layout.etp, layout.sp ? " sp" : "",
                                      layout.cp > 1 ? fmt::format(" cp{} {}", layout.cp, enum_name(layout.cp_comm_type))
                                                    : "",
                                      layout.pp > 1 ? fmt::format(" pp{}", layout.pp) : ""));
      }
    }
    EXPECT_FALSE(checked.empty()) << model;
    if (world_rank() == 0) std::cout << model << " matched in: " << fmt::format("{}", fmt::join(checked, "; ")) << "\n";
  }
  if (world_rank() == 0) std::cout << fmt::format("worst relative error (max|a-b| / max|ref|): {:.3g}\n", worst_error);
}

}  // namespace
}  // namespace foldtron::testing
