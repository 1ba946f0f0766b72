// Generation: incremental decoding with the key/value cache equals recomputing the whole prefix
// each step (decoder-only and encoder-decoder, dense and MoE, under tp and dp of the job's world);
// every layout decodes what one rank decodes (greedy and beam search); beam search with one beam
// equals greedy search; the logits processors against hand computations.
#include <fmt/format.h>

#include "config/config_load.h"
#include "config/layout.h"
#include "generation/generate.h"
#include "generation/step_runner.h"
#include "models/registry.h"
#include "mpi_test.h"
#include "parallel/process_groups.h"

namespace foldtron::testing {
namespace {

// The model families under test, small: decoder-only dense and MoE, encoder-decoder (Marian's
// shape, random weights) dense and MoE.
struct Family {
  std::string name;
  std::vector<std::string> overrides;
};

const std::vector<Family>& families() {
  static const std::vector<Family> list{
      {"llama", {"model.num_layers=2"}},
      {"mixtral", {"model.architecture=mixtral", "moe.num_experts=4", "moe.expert_ffn_hidden_size=64",
                   "model.num_layers=2"}},
      {"marian",
       {"model.architecture=marian", "model.encoder_layers=2", "model.num_layers=2", "model.norm_position=post",
        "model.position_embedding=sinusoidal", "model.normalization=layernorm", "model.activation=silu",
        "model.linear_bias=true", "model.scale_embeddings=true", "model.final_logits_bias=true",
        "model.tie_embeddings=true", "model.pad_token_id=0", "model.decoder_start_token_id=0",
        "model.num_query_groups=8"}},
      {"marian-moe",
       {"model.architecture=marian", "model.encoder_layers=1", "model.num_layers=1", "model.norm_position=pre",
        "model.position_embedding=learned", "model.activation=gelu", "model.tie_embeddings=true",
        "model.num_languages=2", "model.embedding_norm=true", "model.decoder_start_token_id=1",
        "moe.num_experts=4", "moe.expert_ffn_hidden_size=64"}},
  };
  return list;
}

// tp 2 where the world allows (the rest dp), experts over up to 4 ranks.
Config config_for(const Family& family, int world, bool single) {
  Config config = load_config({"tiny-dense", "", family.overrides});
  config.model.init_std = 0.2;  // sharper distributions: fewer near-ties between tokens
  if (!single && world % 2 == 0) config.parallel.tp = 2;
  if (!single && config.moe.enabled()) {
    config.parallel.ep = std::min(world, 4);
    config.parallel.etp = 1;
  }
  return config;
}

std::shared_ptr<Model> model_for(const Config& config, ProcessGroups& groups) {
  std::shared_ptr<Model> model = build_model(config, groups, device(), 5);
  model->eval();
  return model;
}

// The family's model in the job's layout (config_for), with its groups.
struct Built {
  Config config;
  std::unique_ptr<ProcessGroups> groups;
  std::shared_ptr<Model> model;
};
Built build_for(const Family& family) {
  Built built;
  built.config = config_for(family, world_size(), false);
  built.groups = std::make_unique<ProcessGroups>(Topology(layout_of(built.config.parallel, world_size())), comm_options());
  built.model = model_for(built.config, *built.groups);
  return built;
}

torch::Tensor prompts(int64_t rows, int64_t length, int64_t seed) {
  return torch::randint(2, 250, {rows, length}, at::detail::createCPUGenerator(seed), torch::kLong);
}

TEST(Generation, IncrementalDecodingEqualsRecomputingThePrefix) {
  for (const Family& family : families()) {
    SCOPED_TRACE(family.name);
    const Built built = build_for(family);
    const Config& config = built.config;
    ProcessGroups& groups = *built.groups;
    const std::shared_ptr<Model>& model = built.model;
    const torch::Tensor source = prompts(3, 6, 7).to(device());  // [b, S] (the prompt, or the source)
    const torch::Tensor tokens = prompts(3, 5, 8).to(device());  // [b, n] fed one at a time
    const auto longs = torch::TensorOptions().dtype(torch::kLong).device(device());
    const bool encoder_decoder = model->encoder_decoder();
    StepRunner cached_runner(*model, groups);
    KVCache cache;
    // The first step: the prompt, or the source and the start token.
    ModelInputs step;
    step.input_ids = source.t().contiguous();
    step.positions = torch::arange(source.size(1), longs);
    torch::Tensor decoder = torch::full({3, 1}, config.model.decoder_start_token_id, longs);
    if (encoder_decoder) {
      step.decoder_input_ids = decoder.t().contiguous();
      step.decoder_positions = torch::zeros({1}, longs);
      if (config.model.num_languages > 0) {
        step.languages = torch::tensor({0, 1, 0}, longs);
        step.decoder_languages = torch::tensor({1, 0, 1}, longs);
      }
    }
    torch::Tensor prefix = source;
    for (int64_t i = 0; i <= tokens.size(1); ++i) {
      SCOPED_TRACE(fmt::format("step {}", i));
      const torch::Tensor incremental = cached_runner.step(step, cache);  // [b, V]
      cache.encoder_done = encoder_decoder;
      // The whole prefix again, with a fresh cache.
      ModelInputs whole = step;
      KVCache fresh;
      if (encoder_decoder) {
        whole.input_ids = source.t().contiguous();
        whole.decoder_input_ids = decoder.t().contiguous();
        whole.decoder_positions = torch::arange(decoder.size(1), longs);
      } else {
        whole.input_ids = prefix.t().contiguous();
        whole.positions = torch::arange(prefix.size(1), longs);
      }
      const torch::Tensor recomputed = cached_runner.step(whole, fresh);
      EXPECT_TRUE(close(incremental, recomputed, 1e-5, 1e-5 * recomputed.abs().max().item<double>()));
      if (i == tokens.size(1)) break;
      const torch::Tensor next = tokens.narrow(1, i, 1);  // [b, 1]
      if (encoder_decoder) {
        decoder = torch::cat({decoder, next}, 1);
        step.decoder_input_ids = next.t().contiguous();
        step.decoder_positions = torch::full({1}, decoder.size(1) - 1, longs);
      } else {
        prefix = torch::cat({prefix, next}, 1);
        step.input_ids = next.t().contiguous();
        step.positions = torch::full({1}, prefix.size(1) - 1, longs);
      }
    }
  }
}

TEST(Generation, EveryLayoutDecodesLikeOneRank) {
  // Greedy and beam search over a batch of 3 (dp ranks may hold none), with a padded prompt.
  for (const Family& family : families()) {
    SCOPED_TRACE(family.name);
    ProcessGroups self(Topology(ParallelLayout{1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options(), MPI_COMM_SELF);
    const std::shared_ptr<Model> reference = model_for(config_for(family, 1, true), self);
    const Built built = build_for(family);
    const Config& config = built.config;
    ProcessGroups& groups = *built.groups;
    const std::shared_ptr<Model>& model = built.model;
    const torch::Tensor ids = prompts(3, 6, 9);
    torch::Tensor mask = torch::ones({3, 6}, torch::kLong);
    // Decoder-only prompts are padded on the left, an encoder's source on the right.
    if (model->encoder_decoder()) {
      mask[1].narrow(0, 4, 2).fill_(0);
    } else {
      mask[1].narrow(0, 0, 2).fill_(0);
    }
    GenerationOptions options;
    options.max_new_tokens = 7;
    options.eos_token_ids = {3};
    options.pad_token_id = 0;
    options.decoder_start_token_id = config.model.decoder_start_token_id;
    for (const int64_t beams : {1, 3}) {
      SCOPED_TRACE(fmt::format("{} beams", beams));
      options.num_beams = beams;
      options.early_stopping = EarlyStopping::kTrue;
      const torch::Tensor want = generate(*reference, self, ids, mask, options);
      const torch::Tensor got = generate(*model, groups, ids, mask, options);
      EXPECT_TRUE(torch::equal(got, want)) << got << "\nvs one rank:\n" << want;
      EXPECT_EQ(got.size(0), 3);
      EXPECT_EQ(got.size(1), (model->encoder_decoder() ? 1 : 6) + 7);
    }
  }
}

TEST(Generation, BeamSearchWithOneBeamEqualsGreedySearch) {
  for (const Family& family : families()) {
    SCOPED_TRACE(family.name);
    const Built built = build_for(family);
    const Config& config = built.config;
    ProcessGroups& groups = *built.groups;
    const std::shared_ptr<Model>& model = built.model;
    GenerationOptions options;
    options.max_new_tokens = 9;
    options.eos_token_ids = {7};
    options.decoder_start_token_id = config.model.decoder_start_token_id;
    options.early_stopping = EarlyStopping::kTrue;
    const torch::Tensor ids = prompts(4, 5, 10);
    const torch::Tensor greedy = generate(*model, groups, ids, torch::Tensor(), options);
    options.beam_search = true;
    const torch::Tensor beam = generate(*model, groups, ids, torch::Tensor(), options);
    EXPECT_TRUE(torch::equal(beam, greedy)) << beam << "\nvs greedy:\n" << greedy;
    // Sampling among the single most likely token is greedy search too.
    options.beam_search = false;
    options.do_sample = true;
    options.top_k = 1;
    options.temperature = 0.7;
    EXPECT_TRUE(torch::equal(generate(*model, groups, ids, torch::Tensor(), options), greedy));
  }
}

TEST(Generation, LogitsProcessorsFollowHuggingFace) {
  if (world_rank() != 0) GTEST_SKIP() << "single-process arithmetic";
  GenerationOptions options;
  options.eos_token_ids = {1};
  options.forced_eos_token_id = 1;
  options.bad_words_ids = {{4}, {2, 3}, {1}};  // a single token, a pair, and eos (ignored)
  const torch::Tensor scores = torch::arange(6, torch::kFloat).repeat({2, 1});  // [2, 6]: 0 1 2 3 4 5
  const torch::Tensor sequences = torch::tensor({{5, 2}, {2, 5}}, torch::kLong);  // row 0 ends in 2
  const double inf = std::numeric_limits<double>::infinity();
  // Length 2 of at most 10, minimum 5: token 4 banned, 3 banned after 2, eos banned.
  torch::Tensor out = process_logits(scores, sequences, 10, 5, options, false);
  EXPECT_TRUE(torch::equal(out[0], torch::tensor({0.0, -inf, 2.0, -inf, -inf, 5.0}, torch::kFloat)));
  EXPECT_TRUE(torch::equal(out[1], torch::tensor({0.0, -inf, 2.0, 3.0, -inf, 5.0}, torch::kFloat)));
  // At max_length - 1 only the forced eos, scored 0.
  out = process_logits(scores, sequences, 3, 0, options, false);
  EXPECT_TRUE(torch::equal(out[1], torch::tensor({-inf, 0.0, -inf, -inf, -inf, -inf}, torch::kFloat)));
  // Sampling: temperature divides; top-k keeps ties at the threshold; top-p keeps the smallest
  // set of the most likely tokens holding p (here the two largest of softmax(0..5) hold 0.87).
  GenerationOptions sampling;
  sampling.temperature = 2.0;
  out = process_logits(scores, sequences, 10, 0, sampling, true);
  EXPECT_TRUE(torch::equal(out[0], scores[0] / 2.0));
  sampling.temperature = 1.0;
  sampling.top_k = 2;
  out = process_logits(torch::tensor({{1.0, 3.0, 3.0, 2.0}}, torch::kFloat), sequences.narrow(0, 0, 1), 10, 0,
                       sampling, true);
  EXPECT_TRUE(torch::equal(out[0], torch::tensor({-inf, 3.0, 3.0, -inf}, torch::kFloat)));
  sampling.top_k = 0;
  sampling.top_p = 0.8;
  out = process_logits(scores, sequences, 10, 0, sampling, true);
  EXPECT_TRUE(torch::equal(out[0], torch::tensor({-inf, -inf, -inf, -inf, 4.0, 5.0}, torch::kFloat)));
}

}  // namespace
}  // namespace foldtron::testing
