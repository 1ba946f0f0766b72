// config: strict YAML loading, composition order, presets, and one test per validation message.
#include <algorithm>
#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

#include "config/config_load.h"
#include "config/validate.h"
#include "scratch_files.h"

namespace foldtron {
namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  return testing::write_file(::testing::TempDir() + name, text);
}

// Problems of tiny-moe with `overrides`, at `world` ranks (0: no world checks).
std::vector<ConfigProblem> problems_of(std::vector<std::string> overrides, int64_t world = 8,
                                       const std::string& preset = "tiny-moe") {
  const Config config = load_config({preset, "", std::move(overrides)});
  return check_config(config, world);
}

// The load error of a config source.
ConfigError load_error(const ConfigSources& sources) {
  try {
    load_config(sources);
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "load_config did not throw";
  return ConfigError("", "", "");
}

::testing::AssertionResult has_problem(const std::vector<ConfigProblem>& problems, const std::string& field,
                                       const std::string& text) {
  std::string seen;
  for (const ConfigProblem& p : problems) {
    if (p.field == field && p.message.find(text) != std::string::npos) {
      if (p.hint.empty()) return ::testing::AssertionFailure() << "problem has no hint: " << p.message;
      return ::testing::AssertionSuccess();
    }
    seen += "\n  " + p.field + ": " + p.message;
  }
  return ::testing::AssertionFailure() << "no problem on " << field << " containing '" << text << "'; got:" << seen;
}

// ---- presets ----

TEST(Presets, AllPresetsLoadAndValidate) {
  const std::vector<std::string> names = preset_names();
  for (const char* expected : {"demo", "tiny-dense", "tiny-moe", "mixtral-8x7b", "mixtral-8x22b", "qwen2-57b-a14b"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  for (const std::string& name : names) {
    const Config config = load_config({name, "", {}});
    EXPECT_TRUE(check_config(config, 0).empty()) << name;
  }
  EXPECT_TRUE(check_config(load_config({"demo", "", {}}), 4).empty());
}

TEST(Presets, RealArchitecturesHaveThePublishedShapes) {
  const Config mixtral = load_config({"mixtral-8x7b", "", {}});
  EXPECT_EQ(mixtral.model.hidden_size, 4096);
  EXPECT_EQ(mixtral.model.num_layers, 32);
  EXPECT_EQ(mixtral.model.num_attention_heads, 32);
  EXPECT_EQ(mixtral.model.num_query_groups, 8);
  EXPECT_EQ(mixtral.moe.expert_ffn_hidden_size, 14336);
  EXPECT_EQ(mixtral.moe.num_experts, 8);
  EXPECT_EQ(mixtral.moe.topk, 2);
  EXPECT_EQ(mixtral.model.vocab_size, 32000);
  EXPECT_DOUBLE_EQ(mixtral.model.rope_theta, 1e6);
  const Config big = load_config({"mixtral-8x22b", "", {}});
  EXPECT_EQ(big.model.hidden_size, 6144);
  EXPECT_EQ(big.model.num_layers, 56);
  EXPECT_EQ(big.model.num_attention_heads, 48);
  EXPECT_EQ(big.moe.expert_ffn_hidden_size, 16384);
  EXPECT_EQ(big.model.vocab_size, 32768);
  const Config qwen = load_config({"qwen2-57b-a14b", "", {}});
  EXPECT_EQ(qwen.model.hidden_size, 3584);
  EXPECT_EQ(qwen.model.num_layers, 28);
  EXPECT_EQ(qwen.model.num_attention_heads, 28);
  EXPECT_EQ(qwen.model.num_query_groups, 4);
  EXPECT_EQ(qwen.moe.num_experts, 64);
  EXPECT_EQ(qwen.moe.topk, 8);
  EXPECT_EQ(qwen.moe.expert_ffn_hidden_size, 2560);
  EXPECT_EQ(qwen.moe.shared_expert_ffn_hidden_size, 20480);
  EXPECT_TRUE(qwen.moe.shared_expert_gate);
  EXPECT_TRUE(qwen.model.qkv_bias);
  EXPECT_FALSE(qwen.moe.normalize_topk);
  EXPECT_EQ(qwen.model.vocab_size, 151936);
}

TEST(Presets, TinyPresetsDivideEveryTestLayout) {
  // tp up to 4 (4 key/value heads), dp up to 32, ep up to 8 and etp up to 4 for experts.
  for (const char* preset : {"tiny-dense", "tiny-moe"}) {
    for (int64_t tp : {1, 2, 4}) {
      const auto problems = problems_of({"parallel.tp=" + std::to_string(tp), "parallel.sequence_parallel=true"}, 32,
                                        preset);
      EXPECT_TRUE(problems.empty()) << preset << " tp " << tp << ": " << problems.front().message;
    }
  }
  EXPECT_TRUE(problems_of({"parallel.ep=8", "parallel.etp=4"}, 32).empty());
  EXPECT_TRUE(problems_of({"parallel.tp=2", "parallel.cp=2", "parallel.pp=2", "parallel.ep=4", "parallel.etp=2",
                           "parallel.vpp=2"},
                          32)
                  .empty());
}

TEST(Presets, UnknownPresetSuggestsTheClosest) {
  const ConfigError e = load_error({"mixtral-8x7", "", {}});
  EXPECT_NE(std::string(e.what()).find("unknown preset 'mixtral-8x7'"), std::string::npos);
  EXPECT_NE(e.hint().find("mixtral-8x7b"), std::string::npos);
}

// ---- composition ----

TEST(Compose, PresetThenFileThenSetInThatPrecedence) {
  const std::string file = write_temp("compose.yaml", "model:\n  num_layers: 6\n  hidden_size: 96\n");
  const Config config = load_config({"tiny-dense", file, {"model.num_layers=8", "train.seed=7"}});
  EXPECT_EQ(config.model.num_layers, 8);        // --set beats the file
  EXPECT_EQ(config.model.hidden_size, 96);      // the file beats the preset
  EXPECT_EQ(config.model.ffn_hidden_size, 256);  // the preset beats the defaults
  EXPECT_EQ(config.train.seed, 7);
}

TEST(Compose, FileMergesSectionsAndReplacesValuesKeyByKey) {
  // A file over a preset: sections merge key by key, a value replaces a section, and a file of
  // many sections merges each (one unknown-section problem per extra section).
  const std::string first = write_temp("merge_first.yaml", "model:\n  num_layers: 6\ntrain:\n  seed: 3\n");
  Config config = load_config({"tiny-dense", first, {}});
  EXPECT_EQ(config.model.num_layers, 6);
  EXPECT_EQ(config.model.ffn_hidden_size, 256);  // the preset's key beside the file's
  EXPECT_EQ(config.train.seed, 3);
  const std::string scalar = write_temp("merge_scalar.yaml", "model: 4\n");
  const ConfigError e = load_error({"tiny-dense", scalar, {}});
  ASSERT_EQ(e.problems().size(), 1u);
  EXPECT_EQ(e.problems()[0].field, "model");  // the section was replaced by the value, not merged
  std::string many = "model:\n  num_layers: 5\n";
  for (int i = 0; i < 2000; ++i) many += "extra" + std::to_string(i) + ":\n  key: " + std::to_string(i) + "\n";
  const ConfigError wide = load_error({"tiny-dense", write_temp("merge_many.yaml", many), {}});
  EXPECT_EQ(wide.problems().size(), 2000u);
  EXPECT_EQ(wide.problems()[0].field, "extra0");
  EXPECT_EQ(wide.problems()[1999].field, "extra1999");  // in the file's order
}

TEST(Compose, SetParsesYamlValues) {
  const Config config = load_config({"", "", {"moe.dense_layers=[0, 3]", "parallel.order=tp-cp-ep-pp-dp",
                                              "model.qkv_bias=true", "model.rope_theta=1e6"}});
  EXPECT_EQ(config.moe.dense_layers, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(config.parallel.order, "tp-cp-ep-pp-dp");
  EXPECT_TRUE(config.model.qkv_bias);
  EXPECT_DOUBLE_EQ(config.model.rope_theta, 1e6);
}

TEST(Compose, ResolvedYamlRoundTrips) {
  const Config config = load_config({"qwen2-57b-a14b", "", {"moe.dense_layers=[1]", "data.path='a \"b\": c'"}});
  const std::string text = config_to_yaml(config);
  const std::string file = write_temp("roundtrip.yaml", text);
  const Config again = load_config({"", file, {}});
  EXPECT_EQ(config_to_yaml(again), text);
  EXPECT_EQ(again.data.path, "a \"b\": c");
}

TEST(Compose, MalformedSetIsAUsageError) {
  EXPECT_THROW(load_config({"", "", {"num_layers=4"}}), UsageError);
  EXPECT_THROW(load_config({"", "", {"model.num_layers"}}), UsageError);
}

// ---- strict loading errors ----

TEST(Load, UnknownKeySuggestsTheClosestKey) {
  const ConfigError e = load_error({"", "", {"model.hiden_size=64"}});
  ASSERT_EQ(e.problems().size(), 1u);
  EXPECT_EQ(e.problems()[0].field, "model.hiden_size");
  EXPECT_EQ(e.problems()[0].message, "unknown key");
  EXPECT_NE(e.problems()[0].hint.find("did you mean 'hidden_size'?"), std::string::npos);
}

TEST(Load, UnknownSectionSuggestsTheClosestSection) {
  const std::string file = write_temp("section.yaml", "paralel:\n  tp: 2\n");
  const ConfigError e = load_error({"", file, {}});
  EXPECT_EQ(e.problems()[0].field, "paralel");
  EXPECT_NE(e.problems()[0].hint.find("parallel"), std::string::npos);
}

TEST(Load, WrongTypesNameTheFieldAndValue) {
  const ConfigError e = load_error({"", "", {"model.hidden_size=big", "model.rope_theta=[1]", "model.qkv_bias=maybe",
                                             "moe.dense_layers=3", "parallel.order=[tp]"}});
  const auto& p = e.problems();
  ASSERT_EQ(p.size(), 5u) << e.what();
  EXPECT_TRUE(has_problem(p, "model.hidden_size", "expected an integer, got 'big'"));
  EXPECT_TRUE(has_problem(p, "model.rope_theta", "expected a number"));
  EXPECT_TRUE(has_problem(p, "model.qkv_bias", "expected true or false, got 'maybe'"));
  EXPECT_TRUE(has_problem(p, "moe.dense_layers", "expected a list of integers"));
  EXPECT_TRUE(has_problem(p, "parallel.order", "expected a string"));
}

TEST(Load, MisspelledEnumerationSuggests) {
  const ConfigError e = load_error({"", "", {"moe.dispatcher=alltoal"}});
  EXPECT_TRUE(has_problem(e.problems(), "moe.dispatcher", "'alltoal' is not one of: alltoall, allgather"));
  EXPECT_NE(e.problems()[0].hint.find("did you mean 'alltoall'?"), std::string::npos);
  const ConfigError moments = load_error({"", "", {"train.adam_moments_dtype=fp16"}});
  EXPECT_TRUE(has_problem(moments.problems(), "train.adam_moments_dtype", "'fp16' is not one of: fp32, bf16"));
}

TEST(Load, EmptyValueAndNonMappingSection) {
  const std::string file = write_temp("empty.yaml", "model:\n  num_layers:\ntrain: 5\n");
  const ConfigError e = load_error({"", file, {}});
  EXPECT_TRUE(has_problem(e.problems(), "model.num_layers", "has no value"));
  EXPECT_TRUE(has_problem(e.problems(), "train", "must be a mapping"));
}

TEST(Load, BadYamlNamesFileLineAndColumn) {
  const std::string file = write_temp("bad.yaml", "model:\n  num_layers: [4\n");
  const ConfigError e = load_error({"", file, {}});
  EXPECT_EQ(e.problems()[0].field, file);
  EXPECT_NE(std::string(e.what()).find("invalid YAML at line"), std::string::npos);
}

TEST(Load, TopLevelMustBeAMapping) {
  const std::string file = write_temp("list.yaml", "- model\n- train\n");
  const ConfigError e = load_error({"", file, {}});
  EXPECT_NE(std::string(e.what()).find("top level must be a mapping"), std::string::npos);
}

// Each file text (over `preset`) is a ConfigError naming the file, whose message holds the text given.
void expect_file_errors(const std::string& preset, const std::vector<std::pair<std::string, std::string>>& cases) {
  for (const auto& [text, expected] : cases) {
    const std::string file = write_temp("file_error.yaml", text);
    const ConfigError e = load_error({preset, file, {}});
    EXPECT_EQ(e.problems()[0].field, file);
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

// Found by fuzzing (tests/fuzz/corpus/config_yaml/found_complex_key.yaml): a YAML complex key
// escaped as yaml-cpp's bad conversion.
TEST(Load, ComplexKeyIsNamedNotThrownThrough) {
  expect_file_errors("", {{"parallel:\n  ? tp: 2\n  : 4\n", "is a mapping, not a name"},
                          {"? [model, train]\n: 1\n", "is a sequence, not a name"},
                          {"parallel:\n  : 4\n", "is empty, not a name"}});
  // An alias inside its own anchor nests for ever: named, not followed.
  const std::string cyclic = write_temp("cyclic.yaml", "model: &loop\n  inner: *loop\n");
  const ConfigError e = load_error({"", cyclic, {}});
  EXPECT_NE(std::string(e.what()).find("nest more than"), std::string::npos) << e.what();
}

TEST(Load, RepeatedKeyIsNamedWithBothLines) {
  // yaml-cpp keeps a repeated key; the loader would have read the first and merged the last.
  expect_file_errors("tiny-dense",
                     {{"model:\n  num_layers: 6\n  num_layers: 8\n",
                       "the key 'num_layers' appears twice in one mapping, at lines 2 and 3"},
                      {"model: 4\ntrain:\n  seed: 1\nmodel:\n  num_layers: 2\n",
                       "the key 'model' appears twice in one mapping, at lines 1 and 4"}});
  // The same key in two mappings is no repetition.
  const std::string apart = write_temp("apart.yaml", "model:\n  num_layers: 6\ntrain:\n  num_layers_x: 1\n");
  EXPECT_EQ(load_error({"tiny-dense", apart, {}}).problems()[0].field, "train.num_layers_x");
}

TEST(Load, MissingFileNamesThePath) {
  const ConfigError e = load_error({"", "/nonexistent/run.yaml", {}});
  EXPECT_NE(std::string(e.what()).find("cannot open config file '/nonexistent/run.yaml'"), std::string::npos);
}

// ---- validation: one test per message ----

TEST(Validate, AllProblemsAreReportedTogether) {
  const auto p = problems_of({"parallel.tp=3", "moe.topk=9", "train.micro_batch_size=0"}, 6);
  EXPECT_TRUE(has_problem(p, "model.num_attention_heads", "(8) must be divisible by parallel.tp (3)"));
  EXPECT_TRUE(has_problem(p, "moe.topk", "topk (9) must not exceed moe.num_experts (8)"));
  EXPECT_TRUE(has_problem(p, "train.micro_batch_size", "must be at least 1, got 0"));
  try {
    validate_config(load_config({"tiny-moe", "", {"parallel.tp=3", "moe.topk=9"}}), 6);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_GE(e.problems().size(), 3u);
  }
}

TEST(Validate, NonPositiveSizes) {
  const auto p = problems_of({"model.hidden_size=0", "parallel.cp=0", "model.num_layers=-1"}, 0);
  EXPECT_TRUE(has_problem(p, "model.hidden_size", "must be at least 1, got 0"));
  EXPECT_TRUE(has_problem(p, "parallel.cp", "must be at least 1, got 0"));
  EXPECT_TRUE(has_problem(p, "model.num_layers", "must be at least 1, got -1"));
}

TEST(Validate, WorldNotDivisibleByTpCpPp) {
  const auto p = problems_of({"parallel.tp=2", "parallel.cp=2"}, 6);
  EXPECT_TRUE(has_problem(p, "parallel", "world size 6 is not divisible by tp*cp*pp = 4 (tp 2, cp 2, pp 1)"));
}

TEST(Validate, WorldNotDivisibleByEtpEpPp) {
  const auto p = problems_of({"parallel.ep=4", "parallel.etp=1"}, 6);
  EXPECT_TRUE(has_problem(p, "parallel", "world size 6 is not divisible by etp*ep*pp = 4 (etp 1, ep 4, pp 1)"));
}

TEST(Validate, ExpertsDivisibleByEp) {
  const auto p = problems_of({"moe.num_experts=6", "parallel.ep=4"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.num_experts", "moe.num_experts (6) must be divisible by parallel.ep (4)"));
}

TEST(Validate, HeadsAndGroupsDivisibleByTp) {
  const auto p = problems_of({"model.num_attention_heads=12", "model.num_query_groups=6", "model.hidden_size=96",
                              "parallel.tp=8", "moe.num_experts=8"},
                             8);
  EXPECT_TRUE(has_problem(p, "model.num_attention_heads", "(12) must be divisible by parallel.tp (8)"));
  EXPECT_TRUE(has_problem(p, "model.num_query_groups", "(6) must be divisible by parallel.tp (8)"));
}

TEST(Validate, FfnDivisibleByTpAndExpertFfnByEtp) {
  auto p = problems_of({"model.ffn_hidden_size=100", "parallel.tp=8"}, 8, "tiny-dense");
  EXPECT_TRUE(has_problem(p, "model.ffn_hidden_size", "(100) must be divisible by parallel.tp (8)"));
  p = problems_of({"moe.expert_ffn_hidden_size=66", "parallel.etp=4"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.expert_ffn_hidden_size", "(66) must be divisible by parallel.etp (4)"));
  p = problems_of({"moe.shared_expert_ffn_hidden_size=66", "parallel.tp=4"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.shared_expert_ffn_hidden_size", "(66) must be divisible by parallel.tp (4)"));
}

TEST(Validate, VocabularyIsPaddedRatherThanRefused) {
  // 260 does not split over tp 8: the embedding pads it to 264 (layers/embedding.h).
  const auto p = problems_of({"model.vocab_size=260", "parallel.tp=8", "model.num_query_groups=8"}, 8, "tiny-dense");
  EXPECT_TRUE(p.empty()) << p.front().field << ": " << p.front().message;
}

TEST(Validate, DataKeys) {
  auto p = problems_of({"data.tokenizer=sentencepiece"}, 8);
  EXPECT_TRUE(has_problem(p, "data.tokenizer_model", "empty, but data.tokenizer is sentencepiece"));
  p = problems_of({"data.tokenizer_model=m.model"}, 8);
  EXPECT_TRUE(has_problem(p, "data.tokenizer_model", "'m.model' is set, but data.tokenizer is byte"));
  for (const std::string path : {"corpus.bin", "corpus.idx"}) {
    const auto q = problems_of({"data.path=" + path}, 8);
    EXPECT_TRUE(has_problem(q, "data.path", "names one file of an indexed dataset")) << path;
  }
  for (const std::string split : {"a,b", "1,2,3,4", "-1,2", "0,0,0", "1,,2"}) {
    const auto q = problems_of({"data.split=" + split}, 8);
    EXPECT_TRUE(has_problem(q, "data.split", "is not a list of up to three non-negative shares")) << split;
  }
  EXPECT_TRUE(has_problem(problems_of({"data.split=0,1"}, 8), "data.split", "leaves nothing for training"));
  EXPECT_TRUE(has_problem(problems_of({"data.split=1,0", "train.eval_interval=5"}, 8), "data.split",
                          "has no validation share"));
  EXPECT_TRUE(has_problem(problems_of({"train.eval_iters=0", "train.eval_interval=5"}, 8), "train.eval_iters",
                          "must be at least 1"));
  EXPECT_TRUE(problems_of({"data.split=98, 2", "train.eval_interval=5"}, 8).empty());
  const auto shares = parse_split("969,30,1");
  ASSERT_TRUE(shares.has_value());
  EXPECT_EQ((*shares)[1], 30.0);
  EXPECT_EQ(parse_split("7").value()[2], 0.0);
}

TEST(Validate, EncoderDecoderKeysOnlyWhereTheyApply) {
  // Keys of the encoder-decoder do nothing in a decoder-only model: refused there.
  const auto p = problems_of({"model.encoder_layers=2", "model.norm_position=post", "model.position_embedding=learned",
                              "model.scale_embeddings=true", "model.num_languages=3", "model.final_logits_bias=true"},
                             8, "tiny-dense");
  for (const std::string key : {"encoder_layers", "norm_position", "position_embedding", "scale_embeddings",
                                "num_languages", "final_logits_bias"}) {
    EXPECT_TRUE(has_problem(p, "model." + key, "applies to encoder-decoder models, not to 'llama'")) << key;
  }
  // An encoder-decoder needs an encoder, splits its pipeline over both stacks and has no cp.
  const auto q = problems_of({"model.architecture=marian", "model.encoder_layers=0", "parallel.cp=2"}, 8, "tiny-dense");
  EXPECT_TRUE(has_problem(q, "model.encoder_layers", "'marian' is an encoder-decoder but encoder_layers is 0"));
  EXPECT_TRUE(has_problem(q, "parallel.cp", "cp (2) > 1 runs decoder-only models; 'marian' is an encoder-decoder"));
  const auto r = problems_of({"model.architecture=marian", "model.encoder_layers=3", "parallel.pp=2"}, 8, "tiny-dense");
  EXPECT_TRUE(has_problem(r, "model.num_layers", "encoder_layers + num_layers (7) must be divisible by pp*vpp = 2"));
  EXPECT_TRUE(problems_of({"model.architecture=marian", "model.encoder_layers=2", "parallel.pp=2"}, 8, "tiny-dense")
                  .empty());
}

TEST(Validate, SequenceDivisibleByTpWithSequenceParallel) {
  auto p = problems_of({"train.seq_length=66", "parallel.tp=4", "parallel.sequence_parallel=true"}, 8);
  EXPECT_TRUE(has_problem(p, "train.seq_length", "(66) must be divisible by parallel.tp (4)"));
  p = problems_of({"train.seq_length=66", "parallel.tp=4"}, 8);
  EXPECT_TRUE(p.empty());
}

TEST(Validate, SequenceDivisibleByTwiceCp) {
  const auto p = problems_of({"train.seq_length=36", "parallel.cp=4", "parallel.ep=4"}, 8);
  EXPECT_TRUE(has_problem(p, "train.seq_length", "(36) must be divisible by 2*parallel.cp (8)"));
}

TEST(Validate, UlyssesNeedsHeadsDivisibleByTpCp) {
  const auto p = problems_of({"parallel.cp=4", "parallel.tp=4", "parallel.cp_comm_type=a2a"}, 16);
  EXPECT_TRUE(has_problem(p, "model.num_attention_heads", "must be divisible by tp*cp (16)"));
}

TEST(Validate, UlyssesNeedsKeyValueHeadsDivisibleByTpCp) {
  const auto p = problems_of({"parallel.cp=4", "parallel.tp=2", "parallel.cp_comm_type=a2a"}, 16);  // 4 KV heads
  EXPECT_TRUE(has_problem(p, "model.num_query_groups", "must be divisible by tp*cp (8)"));
}

TEST(Validate, RingAttentionHasNoAttentionDropout) {
  const auto p = problems_of({"parallel.cp=2", "parallel.cp_comm_type=p2p", "model.attention_dropout=0.1"}, 8);
  EXPECT_TRUE(has_problem(p, "model.attention_dropout", "p2p (ring) context-parallel attention has no attention dropout"));
  EXPECT_TRUE(problems_of({"parallel.cp=2", "parallel.cp_comm_type=p2p"}, 8).empty());
}

TEST(Validate, Bf16MainGradientsNeedBf16Parameters) {
  const auto p = problems_of({"train.main_grads_dtype=bf16"}, 8);
  EXPECT_TRUE(has_problem(p, "train.main_grads_dtype", "bf16 main gradients are for bf16 parameters"));
  EXPECT_TRUE(problems_of({"train.main_grads_dtype=bf16", "model.params_dtype=bf16"}, 8).empty());
}

TEST(Validate, ContextAndSequenceParallelSplitTheSequenceTpCpWays) {
  const auto p = problems_of({"train.seq_length=20", "parallel.cp=2", "parallel.tp=4", "parallel.sequence_parallel=true"},
                             8);
  EXPECT_TRUE(has_problem(p, "train.seq_length", "(20) must be divisible by tp*cp (8)"));
}

TEST(Validate, LayersDivisibleByPipelineStages) {
  auto p = problems_of({"model.num_layers=6", "parallel.pp=2", "parallel.vpp=2"}, 8);
  EXPECT_TRUE(has_problem(p, "model.num_layers", "num_layers (6) must be divisible by pp*vpp = 4 (pp 2, vpp 2)"));
  p = problems_of({"model.num_layers=6", "parallel.pp=2", "parallel.pipeline_layers=[2, 3]"}, 8);
  EXPECT_TRUE(has_problem(p, "parallel.pipeline_layers", "summing to num_layers (6); got 2 entries summing to 5"));
  EXPECT_TRUE(problems_of({"model.num_layers=6", "parallel.pp=2", "parallel.pipeline_layers=[2, 4]"}, 8).empty());
  p = problems_of({"parallel.vpp=2"}, 8);
  EXPECT_TRUE(has_problem(p, "parallel.vpp", "needs pipeline parallelism, but pp is 1"));
}

TEST(Validate, InterleavedScheduleTakesMicroBatchesInGroupsOfPp) {
  // world 8 = pp 2 x dp 4: 12 sequences of 1 are 3 micro-batches per dp rank, not a multiple of 2.
  const std::vector<std::string> layout{"model.num_layers=4", "parallel.pp=2", "parallel.vpp=2",
                                        "train.micro_batch_size=1"};
  std::vector<std::string> odd = layout, even = layout;
  odd.push_back("train.global_batch_size=12");
  even.push_back("train.global_batch_size=16");
  const auto p = problems_of(odd, 8);
  EXPECT_TRUE(has_problem(p, "train.global_batch_size", "(12) must be divisible by micro_batch_size*dp*pp (8)"));
  const auto it = std::find_if(p.begin(), p.end(),
                               [](const ConfigProblem& q) { return q.message.find("*pp (8)") != std::string::npos; });
  ASSERT_NE(it, p.end());
  EXPECT_NE(it->hint.find("the micro-batches per step (3) must be a multiple of it"), std::string::npos) << it->hint;
  EXPECT_NE(it->hint.find("parallel.vpp: 1"), std::string::npos) << it->hint;
  EXPECT_TRUE(problems_of(even, 8).empty());
}

TEST(Validate, OrderStrings) {
  auto p = problems_of({"parallel.order=tp-cp-ep-dp"}, 8);
  EXPECT_TRUE(has_problem(p, "parallel.order", "'tp-cp-ep-dp' is missing pp"));
  p = problems_of({"parallel.order=tp-cp-ep-dp-tp"}, 8);
  EXPECT_TRUE(has_problem(p, "parallel.order", "names axis 'tp' twice"));
  p = problems_of({"parallel.order=tp-cp-xp-dp-pp"}, 8);
  EXPECT_TRUE(has_problem(p, "parallel.order", "unknown axis 'xp'"));
  // pp not last is fine when edp == dp ...
  EXPECT_TRUE(problems_of({"parallel.order=tp-cp-ep-pp-dp", "parallel.pp=2", "parallel.tp=2", "parallel.ep=2",
                           "parallel.etp=1"},
                          16)
                  .empty());
  // ... and not otherwise.
  p = problems_of({"parallel.order=tp-cp-ep-pp-dp", "parallel.pp=2", "parallel.tp=2", "parallel.ep=2",
                   "parallel.etp=2"},
                  16);
  EXPECT_TRUE(has_problem(p, "parallel.order", "the attention dp (4) must equal the expert edp (2)"));
}

TEST(Validate, TopkAtMostExperts) {
  const auto p = problems_of({"moe.topk=9"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.topk", "topk (9) must not exceed moe.num_experts (8)"));
}

TEST(Validate, CapacityFactorNeedsACompatibleBalancing) {
  auto p = problems_of({"moe.capacity_factor=1.0", "moe.load_balancing=sinkhorn"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.capacity_factor", "needs load_balancing aux_loss, seq_aux_loss or none"));
  EXPECT_TRUE(problems_of({"moe.capacity_factor=1.0", "moe.load_balancing=none"}, 8).empty());
  p = problems_of({"moe.pad_to_capacity=true"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.pad_to_capacity", "needs a capacity"));
}

TEST(Validate, GroupLimitedRouting) {
  auto p = problems_of({"moe.router_num_groups=3", "moe.router_group_topk=1"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.num_experts", "must be divisible by moe.router_num_groups (3)"));
  p = problems_of({"moe.router_num_groups=4", "moe.router_group_topk=5"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.router_group_topk", "must be in 1..router_num_groups (4), got 5"));
  p = problems_of({"moe.router_num_groups=8", "moe.router_group_topk=1"}, 8);
  EXPECT_TRUE(has_problem(p, "moe.topk", "exceeds the experts in 1 selected groups of 1"));
}

TEST(Validate, ArchitectureMatchesExperts) {
  auto p = problems_of({"moe.num_experts=0"}, 8);
  EXPECT_TRUE(has_problem(p, "model.architecture", "is a Mixture-of-Experts family but moe.num_experts is 0"));
  p = problems_of({"moe.num_experts=4"}, 8, "tiny-dense");
  EXPECT_TRUE(has_problem(p, "model.architecture", "'llama' is dense but moe.num_experts is 4"));
  p = problems_of({"parallel.ep=2"}, 8, "tiny-dense");
  EXPECT_TRUE(has_problem(p, "parallel.ep", "needs an MoE model"));
}

TEST(Validate, HeadGeometry) {
  auto p = problems_of({"model.hidden_size=60"}, 8);
  EXPECT_TRUE(has_problem(p, "model.hidden_size", "(60) must be divisible by model.num_attention_heads (8)"));
  p = problems_of({"model.num_query_groups=3"}, 8);
  EXPECT_TRUE(has_problem(p, "model.num_attention_heads", "(8) must be divisible by model.num_query_groups (3)"));
}

TEST(Validate, GlobalBatchDivisibleByMicroBatchTimesDp) {
  const auto p = problems_of({"train.global_batch_size=12", "train.micro_batch_size=2"}, 8);
  EXPECT_TRUE(has_problem(p, "train.global_batch_size", "(12) must be divisible by micro_batch_size*dp (16)"));
}

// Found by fuzz_config_yaml: sizes whose product overflows int64 wrapped to 0 and divided by it.
TEST(Validate, LayoutSizesBeyondAnyWorldAreProblemsNotCrashes) {
  const auto p = problems_of({"parallel.tp=4294967296", "parallel.ep=4294967296", "parallel.pp=2"}, 8);
  EXPECT_TRUE(has_problem(p, "parallel", "is not divisible by tp*cp*pp = 8589934592"));
  EXPECT_TRUE(has_problem(p, "parallel", "is not divisible by etp*ep*pp = more than 2^63"));
  // Without a world (foldtron config) the world is the layout's own product, saturated too.
  const auto q = problems_of({"parallel.tp=4294967296", "parallel.cp=4294967296", "parallel.cp_comm_type=a2a"}, 0);
  EXPECT_TRUE(has_problem(q, "model.num_attention_heads", "tp*cp"));
}

TEST(Validate, CheckpointKeysNeedTheirFolders) {
  const auto p = problems_of({"checkpoint.save_interval=10", "checkpoint.async=true", "checkpoint.load_optional=true",
                              "checkpoint.keep_last=-1", "checkpoint.writer_threads=0"},
                             8);
  EXPECT_TRUE(has_problem(p, "checkpoint.save_interval", "10 steps, but checkpoint.save names no folder"));
  EXPECT_TRUE(has_problem(p, "checkpoint.async", "true, but checkpoint.save names no folder"));
  EXPECT_TRUE(has_problem(p, "checkpoint.load_optional", "true, but checkpoint.load names no folder"));
  EXPECT_TRUE(has_problem(p, "checkpoint.keep_last", "must not be negative, got -1"));
  EXPECT_TRUE(has_problem(p, "checkpoint.writer_threads", "must be at least 1, got 0"));
  const auto q = problems_of({"checkpoint.save=ckpt", "moe.grouped_experts=false"}, 8, "tiny-moe");
  EXPECT_TRUE(has_problem(q, "moe.grouped_experts", "cannot be saved or loaded"));
  EXPECT_TRUE(has_problem(problems_of({"checkpoint.on_save_error=warn"}, 8), "checkpoint.on_save_error",
                          "warn, but checkpoint.save names no folder"));
  EXPECT_TRUE(has_problem(problems_of({"checkpoint.save=ckpt", "checkpoint.on_save_error=warn"}, 8),
                          "checkpoint.on_save_error", "no periodic saves to skip"));
  EXPECT_TRUE(problems_of({"checkpoint.save=ckpt", "checkpoint.save_interval=5", "checkpoint.on_save_error=warn"}, 8)
                  .empty());
  EXPECT_TRUE(problems_of({"checkpoint.save=ckpt", "checkpoint.load=ckpt", "checkpoint.save_interval=2",
                           "checkpoint.async=true", "checkpoint.load_optional=true", "checkpoint.keep_last=0"},
                          8, "tiny-moe")
                  .empty());
}

TEST(Validate, TrainingAndOtherSections) {
  const auto p = problems_of({"train.min_lr=1.0", "train.lr=0.1", "train.adam_beta2=1.0", "train.seq_length=512",
                              "logging.log_interval=0",
                              "model.hidden_dropout=1.5"},
                             8);
  EXPECT_TRUE(has_problem(p, "train.min_lr", "min_lr (1) must not exceed lr (0.1)"));
  EXPECT_TRUE(has_problem(p, "train.adam_beta2", "must be in [0, 1), got 1"));
  EXPECT_TRUE(has_problem(p, "train.seq_length", "exceeds model.max_position_embeddings (256)"));
  EXPECT_TRUE(has_problem(p, "logging.log_interval", "must be at least 1"));
  EXPECT_TRUE(has_problem(p, "model.hidden_dropout", "must be in [0, 1)"));
  const auto q = problems_of({"model.vocab_size=100"}, 8);
  EXPECT_TRUE(has_problem(q, "model.vocab_size", "the byte tokenizer needs vocab_size >= 256"));
  const auto r = problems_of({"moe.dense_layers=[4]"}, 8);
  EXPECT_TRUE(has_problem(r, "moe.dense_layers", "layer 4 is outside 0..3"));
  const auto e = problems_of({"model.recompute=selective", "moe.grouped_experts=false"}, 8);
  EXPECT_TRUE(has_problem(e, "model.recompute", "moe_act recomputation is built for the grouped experts only"));
  const auto b = problems_of({"parallel.grad_bucket_mb=0"}, 8);
  EXPECT_TRUE(has_problem(b, "parallel.grad_bucket_mb", "must be greater than 0, got 0"));
}

TEST(Validate, EtpDefaultsToTp) {
  const Config config = load_config({"tiny-moe", "", {"parallel.tp=2"}});
  EXPECT_EQ(config.parallel.expert_tp(), 2);
  EXPECT_EQ(load_config({"tiny-moe", "", {"parallel.tp=2", "parallel.etp=1"}}).parallel.expert_tp(), 1);
}

}  // namespace
}  // namespace foldtron
