// Hugging Face parity: the tiny Mixtral, Qwen2-MoE, Qwen3-MoE, Llama and Marian checkpoints of
// ../shared/reference/hf, imported into every layout of the job's world size that the model
// allows (tp, ep, etp, sequence parallelism, context and pipeline parallelism, folded), reproduce
// transformers' logits, every hidden state, the loss and every stored gradient of the loss within
// 1e-5 (relative to each tensor's largest entry). Layouts with dp larger than the batch of 2
// exercise ranks without a sequence; pipeline layouts backpropagate through the schedule.
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include <fmt/ranges.h>

#include "checkpoint/hf_config.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/hf_names.h"
#include "checkpoint/safetensors.h"
#include "config/validate.h"
#include "models/registry.h"
#include "mpi_test.h"
#include "optim/param_buffer.h"
#include "parallel/process_groups.h"
#include "training/forward.h"

namespace foldtron::testing {
namespace {

const std::string kReference = FOLDTRON_REFERENCE_DIR "/hf/";
constexpr double kTolerance = 1e-5;

double worst_error = 0;  // largest max|a-b| / max|b| seen, printed at the end

// Relative to the reference's largest entry, floored at 1e-2: some gradients are zero in exact
// arithmetic (a key bias shifts every score of a query alike) and hold only rounding noise of
// about 1e-9.
::testing::AssertionResult near(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-2);
  if (a.sizes() == b.sizes()) {
    worst_error = std::max(worst_error, (a.detach().cpu().to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() / scale);
  }
  return close(a, b, kTolerance, kTolerance * scale);
}

struct Layout {
  int64_t tp, ep, etp;
  bool sp;
  int64_t cp = 1;
  CpCommType cp_comm_type = CpCommType::kAllGather;
  int64_t pp = 1;
};

// False when the model does not split that way (heads, experts, sequence lengths); other
// layouts cover it.
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
  const SafetensorsFile reference(dir + "/reference.safetensors");
  ForwardInputs inputs;
  inputs.input_ids = reference.load("input_ids");
  config.train.seq_length = inputs.input_ids.size(1);
  const bool encoder_decoder = reference.has("decoder_input_ids");
  if (encoder_decoder) {
    inputs.attention_mask = reference.load("attention_mask");
    inputs.decoder_input_ids = reference.load("decoder_input_ids");
    inputs.labels = reference.load("labels");
    // Sequence parallelism splits the target too.
    if (layout.sp && inputs.decoder_input_ids.size(1) % layout.tp != 0) return false;
  }
  try {
    validate_config(config, world);
  } catch (const ConfigError&) {
    return false;
  }
  SCOPED_TRACE(fmt::format("{} world {} tp {} ep {} etp {} sp {} cp {} pp {}", model_name, world, layout.tp,
                           layout.ep, layout.etp, layout.sp, layout.cp, layout.pp));
  ProcessGroups groups(Topology(layout_of(config.parallel, world)), comm_options());
  const std::shared_ptr<Model> model = build_model(config, groups, device(), 1);
  model->eval();  // no dropout, no router losses: the stored gradients are those of the loss alone
  load_hf_weights(*model, HfCheckpoint(dir));
  ParamBuffers buffers(model->parameters(), model->registry(), groups);

  const ForwardResult result = forward_batch(*model, groups, inputs, true, /*backward=*/true);
  EXPECT_TRUE(near(result.logits, reference.load("logits"))) << "logits";
  const double loss = reference.load(encoder_decoder ? "loss" : "ce_loss").item<double>();
  EXPECT_NEAR(result.loss_value, loss, kTolerance * loss) << "loss";
  worst_error = std::max(worst_error, std::abs(result.loss_value - loss) / loss);
  // Hidden states in Hugging Face's order: an encoder-decoder's encoder states, then its decoder's.
  std::vector<std::string> names;
  const int64_t encoder_states = model->num_encoder_states();
  for (int64_t i = 0; i < model->num_hidden_states(); ++i) {
    names.push_back(!encoder_decoder ? fmt::format("hidden_states.{}", i)
                    : i < encoder_states ? fmt::format("encoder_hidden_states.{}", i)
                                         : fmt::format("decoder_hidden_states.{}", i - encoder_states));
  }
  EXPECT_EQ(result.hidden_states.size(), names.size());
  for (size_t i = 0; i < std::min(names.size(), result.hidden_states.size()); ++i) {
    if (!reference.has(names[i])) {
      ADD_FAILURE() << "the reference has no " << names[i];
      continue;
    }
    EXPECT_TRUE(near(result.hidden_states[i], reference.load(names[i]))) << names[i];
  }

  buffers.finish_grad_sync();
  // The reference stores the gradients of some parameters (layer 0, embeddings, output layer):
  // every one of them must be compared, on the pipeline stage that holds it.
  size_t stored = 0;
  for (const std::string& name : reference.names()) stored += name.rfind("grad.", 0) == 0 ? 1 : 0;
  int64_t compared = 0;
  for (const auto& item : model->named_parameters()) {
    // Gathering is collective: every rank gathers every parameter, stored or not.
    const torch::Tensor grad = gather_full(buffers.main_grad(item.value()), model->registry().info(item.value()), groups);
    // The reference names gradients as transformers 5 names its modules (experts fused).
    const std::vector<HfPart> parts = hf_parts(model->architecture(), item.key(),
                                               global_shape(item.value(), model->registry().info(item.value())),
                                               HfExperts::kFused);
    const std::string name = parts.size() == 1 ? "grad." + parts[0].name : "";
    if (!reference.has(name)) continue;
    EXPECT_TRUE(near(grad, reference.load(name))) << name;
    // A tied table on two stages is counted once (both hold the summed gradient).
    if (!model->registry().info(item.value()).stage_tied || groups.pp().rank() == 0) ++compared;
  }
  // Counted once per pipeline stage (tp/dp replicas compare the same tensors).
  torch::Tensor total = torch::full({1}, static_cast<double>(compared), torch::kDouble);
  groups.pp().all_reduce(total);
  EXPECT_EQ(static_cast<size_t>(total.item<double>()), stored) << "stored gradients without a matching parameter";
  return true;
}

TEST(HfParity, EveryLayoutMatchesTransformers) {
  if (!std::filesystem::exists(kReference)) GTEST_SKIP() << "no reference vectors at " << kReference;
  const std::vector<Layout> layouts{{1, 1, 1, false}, {2, 1, 2, false}, {2, 1, 2, true}, {1, 2, 1, false},
                                    {1, 4, 1, false}, {2, 2, 1, true},  {2, 4, 1, true}, {2, 4, 1, false},
                                    {2, 2, 2, true},  {1, 8, 1, false}, {4, 1, 4, false}, {4, 2, 1, true},
                                    // Context parallelism: all-gather and Ulysses attention.
                                    {1, 1, 1, false, 2}, {2, 1, 2, true, 2, CpCommType::kAllToAll},
                                    {1, 2, 1, false, 2, CpCommType::kAllToAll}, {2, 4, 1, true, 2},
                                    {1, 1, 1, false, 4}, {1, 4, 2, false, 4},
                                    {1, 1, 1, false, 2, CpCommType::kP2P}, {2, 4, 1, true, 2, CpCommType::kP2P},
                                    {1, 2, 1, false, 4, CpCommType::kP2P},
                                    // Pipeline parallelism (backward through the schedule), with every
                                    // other dimension.
                                    {1, 1, 1, false, 1, CpCommType::kAllGather, 2},
                                    {2, 2, 1, true, 1, CpCommType::kAllGather, 2},
                                    {1, 2, 1, false, 2, CpCommType::kP2P, 2},
                                    {2, 2, 1, true, 2, CpCommType::kAllGather, 2},
                                    {1, 4, 1, false, 2, CpCommType::kAllToAll, 2}};
  for (const std::string model : {"mixtral-tiny", "qwen2moe-tiny", "qwen3moe-tiny", "llama-tiny", "marian-tiny"}) {
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

// The model of a reference directory in the job's layout with tensor parallelism `tp` (dp the
// rest), or in one process over MPI_COMM_SELF when `single`.
struct Loaded {
  std::unique_ptr<ProcessGroups> groups;
  std::shared_ptr<Model> model;
};
Loaded load_model(const std::string& dir, int64_t tp, bool single) {
  Config config = hf_model_config(dir);
  config.parallel.tp = single ? 1 : tp;
  const int world = single ? 1 : world_size();
  Loaded out;
  out.groups = std::make_unique<ProcessGroups>(Topology(layout_of(config.parallel, world)), comm_options(),
                                               single ? MPI_COMM_SELF : MPI_COMM_WORLD);
  out.model = build_model(config, *out.groups, device(), 1);
  out.model->eval();
  load_hf_weights(*out.model, HfCheckpoint(dir));
  return out;
}

TEST(HfParity, DecoderOnlyModelsHonourTheAttentionMask) {
  // llama-tiny, two rows: row 1 right-padded after 16 tokens, row 0 whole. The loss leaves out
  // the targets that are padding, so it equals the mean over the real targets computed from the
  // unpadded logits; and padding keys are masked, so left padding's values change no logit of a
  // real token.
  const std::string dir = kReference + "llama-tiny";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no reference vectors at " << dir;
  const int64_t tp = world_size() % 2 == 0 ? 2 : 1;
  const Loaded loaded = load_model(dir, tp, false);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = SafetensorsFile(dir + "/reference.safetensors").load("input_ids");  // [2, 24]
  ForwardInputs plain;
  plain.input_ids = ids;
  const ForwardResult whole = forward_batch(*loaded.model, *loaded.groups, plain, false);
  ForwardInputs padded = plain;
  padded.attention_mask = torch::ones_like(ids);
  padded.attention_mask[1].narrow(0, 16, 8).fill_(0);
  const ForwardResult right = forward_batch(*loaded.model, *loaded.groups, padded, false);
  // The expected loss from the unpadded logits: row 0's 23 targets and row 1's first 15.
  const torch::Tensor logp = torch::log_softmax(whole.logits.cpu().to(torch::kDouble), -1);  // [2, 24, V]
  double sum = 0;
  int64_t count = 0;
  for (int64_t row = 0; row < 2; ++row) {
    for (int64_t t = 0; t + 1 < (row == 0 ? 24 : 16); ++t, ++count) sum -= logp[row][t][ids[row][t + 1]].item<double>();
  }
  EXPECT_NEAR(right.loss_value, sum / static_cast<double>(count), 1e-5 * right.loss_value);
  EXPECT_TRUE(close(right.logits.narrow(1, 0, 16), whole.logits.narrow(1, 0, 16), 1e-5, 1e-5));
  // Left padding: row 1's first 4 tokens are padding; other values there change nothing real.
  ForwardInputs left = plain;
  left.attention_mask = torch::ones_like(ids);
  left.attention_mask[1].narrow(0, 0, 4).fill_(0);
  const ForwardResult a = forward_batch(*loaded.model, *loaded.groups, left, false);
  left.input_ids = ids.clone();
  left.input_ids[1].narrow(0, 0, 4).fill_(7);
  const ForwardResult b = forward_batch(*loaded.model, *loaded.groups, left, false);
  EXPECT_TRUE(close(a.logits[1].narrow(0, 4, 20), b.logits[1].narrow(0, 4, 20), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(a.logits[1].narrow(0, 4, 20), whole.logits[1].narrow(0, 4, 20)))
      << "the mask changed nothing: padding keys were attended";
}

TEST(HfParity, AVocabularyThatDoesNotSplitOverTpIsPadded) {
  // llama-tiny with one more token (321, which splits over no tp): the embedding is padded to a
  // multiple of tp (2: llama-tiny's 2 key/value heads allow no more; test_dense pads at tp 4),
  // and the layout gives the single process's logits over the 321 tokens.
  const std::string source = kReference + "llama-tiny";
  if (!std::filesystem::exists(source)) GTEST_SKIP() << "no reference vectors at " << source;
  if (world_size() % 2 != 0) GTEST_SKIP() << "needs tp 2, so an even number of ranks";
  const int64_t tp = 2;
  const std::string dir = ::testing::TempDir() + "foldtron_vocab321";
  if (world_rank() == 0) {
    std::filesystem::create_directories(dir);
    nlohmann::json config = nlohmann::json::parse(std::ifstream(source + "/config.json"));
    config["vocab_size"] = 321;
    std::ofstream(dir + "/config.json") << config.dump(2);
    const SafetensorsFile weights(source + "/model.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const std::string& name : weights.names()) {
      torch::Tensor t = weights.load(name);
      if (name == "model.embed_tokens.weight") t = torch::cat({t, data(77, {1, t.size(1)})});
      tensors.emplace_back(name, t);
    }
    write_safetensors(dir + "/model.safetensors", tensors);
  }
  world().barrier();
  torch::NoGradGuard no_grad;
  ForwardInputs inputs;
  inputs.input_ids = SafetensorsFile(source + "/reference.safetensors").load("input_ids");
  inputs.input_ids[0][3] = 320;  // the new token
  const Loaded single = load_model(dir, 1, true), layout = load_model(dir, tp, false);
  const ForwardResult want = forward_batch(*single.model, *single.groups, inputs, false);
  const ForwardResult got = forward_batch(*layout.model, *layout.groups, inputs, false);
  ASSERT_EQ(got.logits.size(2), 321);
  EXPECT_TRUE(close(got.logits, want.logits, 1e-5, 1e-5 * want.logits.abs().max().item<double>())) << "tp " << tp;
  EXPECT_NEAR(got.loss_value, want.loss_value, 1e-5 * want.loss_value);
}

}  // namespace
}  // namespace foldtron::testing
