// The translation task on a fixture corpus (English, German and French sentences made here, a
// sentencepiece model trained on them, indexed datasets written as foldtron preprocess does):
// the noise functions' bounds and rates; weight schedules; back-translation batches are the
// model's own greedy translations with the languages swapped; a few steps of denoising,
// back-translation and supervised loss together, dense and MoE, give the single-process run's
// losses (each objective's too), gradient norms and gradients in every layout of the world
// within 1e-5; masked language modelling (rates of mask_tokens, encoder-only batches, layouts
// equal one process) and the decoder initialized from it (init-decoder); translate_lines gives
// one line per input in every layout alike; configuration errors name their key.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include <fmt/ranges.h>
#include <mpi.h>

#include "config/config_load.h"
#include "core/errors.h"
#include "core/files.h"
#include "data/indexed_dataset.h"
#include "data/tokenizer.h"
#include "generation/generate.h"
#include "layers/embedding.h"
#include "mpi_test.h"
#include "tasks/tasks.h"
#include "tasks/unmt/init_decoder.h"
#include "tasks/unmt/noise.h"
#include "tasks/unmt/translate.h"
#include "tasks/unmt/translation_task.h"
#include "train_test.h"
#include "training/checkpointing.h"

namespace foldtron::testing {
namespace {

namespace fs = std::filesystem;

// The corpus folder, made once per job by rank 0 (its pid names it) and shared by every rank.
const fs::path& corpus_dir() {
  static const fs::path dir = [] {
    int pid = static_cast<int>(::getpid());
    MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    const fs::path d = fs::temp_directory_path() / fmt::format("foldtron_translation_{}", pid);
    if (world_rank() == 0) {
      remove_tree(d);
      fs::create_directories(d);
      // Sentences from small vocabularies; the same template in three languages.
      const std::vector<std::string> en_words{"red", "green", "blue", "small", "big", "old", "new", "fast"};
      const std::vector<std::string> de_words{"rot", "grün", "blau", "klein", "groß", "alt", "neu", "schnell"};
      const std::vector<std::string> fr_words{"rouge", "vert", "bleu", "petit", "grand", "vieux", "neuf", "rapide"};
      std::mt19937 rng(7);
      const auto line = [&](int lang, int a, int b) {
        if (lang == 0) return fmt::format("the {} house is {} today", en_words[a], en_words[b]);
        if (lang == 1) return fmt::format("das {} Haus ist heute {}", de_words[a], de_words[b]);
        return fmt::format("la maison {} est {} aujourd'hui", fr_words[a], fr_words[b]);
      };
      std::ofstream en(d / "train.en"), de(d / "train.de"), pen(d / "train.en-fr.en"), pfr(d / "train.en-fr.fr"),
          den(d / "dev.en"), dde(d / "dev.de"), all(d / "all.txt");
      for (int i = 0; i < 64; ++i) {
        const int a = static_cast<int>(rng() % 8), b = static_cast<int>(rng() % 8);
        en << line(0, a, b) << "\n";
        de << line(1, b, a) << "\n";
        pen << line(0, a, (a + b) % 8) << "\n";
        pfr << line(2, a, (a + b) % 8) << "\n";
        if (i < 16) {
          den << line(0, b, a) << "\n";
          dde << line(1, b, a) << "\n";
        }
        for (int l = 0; l < 3; ++l) all << line(l, a, b) << "\n";
      }
      for (auto* f : {&en, &de, &pen, &pfr, &den, &dde, &all}) f->close();
      SentencePieceTrainOptions spm;
      spm.inputs = {(d / "all.txt").string()};
      spm.model_prefix = (d / "spm").string();
      spm.vocab_size = 120;
      spm.threads = 1;
      spm.byte_fallback = false;
      train_sentencepiece(spm);
      DataConfig data;
      data.tokenizer = Tokenizer::kSentencePiece;
      data.tokenizer_model = (d / "spm.model").string();
      const std::unique_ptr<TextTokenizer> tokenizer = make_tokenizer(data);
      for (const std::string name : {"train.en", "train.de", "train.en-fr.en", "train.en-fr.fr", "dev.en", "dev.de"}) {
        IndexedDatasetWriter writer((d / name).string(), token_dtype_for(tokenizer->vocab_size()));
        std::ifstream in(d / name);
        for (std::string text; std::getline(in, text);) {
          std::vector<int64_t> ids = tokenizer->encode(text);
          ids.push_back(tokenizer->eos_id());
          writer.add_sequence(ids);
          writer.end_document();
        }
        writer.finish();
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    return d;
  }();
  return dir;
}

Config translation_config(bool moe, const std::vector<std::string>& overrides) {
  const fs::path& d = corpus_dir();
  std::vector<std::string> all{
      "model.architecture=marian", "model.encoder_layers=2", "model.num_layers=2", "model.norm_position=post",
      "model.normalization=layernorm", "model.activation=gelu", "model.position_embedding=learned",
      "model.max_position_embeddings=64", "model.linear_bias=true", "model.embedding_norm=true",
      "model.num_languages=3", "model.tie_embeddings=true", "model.vocab_size=128", "model.pad_token_id=3",
      "model.decoder_start_token_id=1", "data.tokenizer=sentencepiece",
      "data.tokenizer_model=" + (d / "spm.model").string(), "translation.data=" + d.string(),
      "translation.mono=en=train.en de=train.de fr=train.en-fr.fr", "translation.parallel=en-fr=train.en-fr",
      "translation.valid=en-de=dev", "translation.test=\"\"", "translation.ae=en de",
      "translation.bt=en-de-en de-en-de", "translation.para=en-fr fr-en", "translation.ae_lambda=0:1,4:0.5",
      "translation.max_length=24", "train.train_iters=4", "train.global_batch_size=12", "train.micro_batch_size=3",
      "train.lr_warmup_iters=1", "logging.log_interval=100"};
  all.insert(all.end(), kSmoothAdam.begin(), kSmoothAdam.end());
  if (moe) {
    for (const char* o : {"moe.num_experts=4", "moe.topk=2", "moe.expert_ffn_hidden_size=64", "moe.router_fp64=true",
                          "moe.aux_loss_coeff=0.01"}) {
      all.push_back(o);
    }
  }
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_config({"tiny-dense", "", all});
}

// Masked language modelling alone (the pretraining run) over the three languages.
const std::vector<std::string> kMlmOnly{"translation.ae=\"\"", "translation.bt=\"\"", "translation.para=\"\"",
                                        "translation.mlm=en de fr"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Recorded train_translation(const Config& config, MPI_Comm base, int world) {
  return train_recorded(config, base, world, false, true, task_factory(config));
}

std::vector<std::string> words_of(const std::vector<int64_t>& tokens, const std::vector<bool>& starts) {
  std::vector<std::string> out;
  for (const auto& word : split_words(tokens, starts)) out.push_back(fmt::format("{}", fmt::join(word, ",")));
  return out;
}

TEST(Noise, ShuffleMovesNoWordKPlacesAndRatesHold) {
  // A toy vocabulary: even ids start words, odd ids continue them.
  std::vector<bool> starts(100);
  for (size_t i = 0; i < starts.size(); i += 2) starts[i] = true;
  std::mt19937_64 rng(3);
  std::vector<int64_t> sentence;
  for (int64_t w = 0; w < 40; ++w) {
    sentence.push_back(2 * w);
    if (w % 3 == 0) sentence.push_back(2 * w + 1);
  }
  const std::vector<std::string> words = words_of(sentence, starts);
  ASSERT_EQ(words.size(), 40u);
  for (const int64_t k : {2, 3, 5}) {
    int64_t moved = 0;
    for (int trial = 0; trial < 200; ++trial) {
      const std::vector<int64_t> noised = add_noise(sentence, starts, {k, 0.0, 0.0, 99}, rng);
      const std::vector<std::string> out = words_of(noised, starts);
      ASSERT_EQ(out.size(), words.size());
      for (size_t i = 0; i < out.size(); ++i) {
        const auto at = std::find(words.begin(), words.end(), out[i]) - words.begin();
        EXPECT_LT(std::abs(static_cast<int64_t>(i) - at), k) << "k " << k;
        moved += static_cast<int64_t>(i) != at;
      }
    }
    EXPECT_GT(moved, 0) << "k " << k << " never moved a word";
  }
  int64_t kept = 0, blanked = 0, total = 0;
  for (int trial = 0; trial < 500; ++trial) {
    const std::vector<int64_t> dropped = add_noise(sentence, starts, {0, 0.1, 0.0, 99}, rng);
    kept += static_cast<int64_t>(words_of(dropped, starts).size());
    const std::vector<int64_t> blank = add_noise(sentence, starts, {0, 0.0, 0.1, 98}, rng);
    blanked += std::count(blank.begin(), blank.end(), 98);
    total += 40;
  }
  // 20,000 words: the rates within 1 percentage point (5 standard deviations).
  EXPECT_NEAR(1.0 - static_cast<double>(kept) / static_cast<double>(total), 0.1, 0.01);
  EXPECT_NEAR(static_cast<double>(blanked) / static_cast<double>(total), 0.1, 0.01);
  // A one-word sentence keeps its word whatever the dropout.
  EXPECT_EQ(add_noise({4, 5}, starts, {3, 1.0, 0.0, 99}, rng), (std::vector<int64_t>{4, 5}));
}

TEST(Noise, LambdaSchedules) {
  const LambdaSchedule constant("0.5", "k");
  EXPECT_DOUBLE_EQ(constant.at(0), 0.5);
  EXPECT_DOUBLE_EQ(constant.at(1000000), 0.5);
  const LambdaSchedule ae("0:1,100000:0.1,300000:0", "k");
  EXPECT_DOUBLE_EQ(ae.at(0), 1.0);
  EXPECT_NEAR(ae.at(50000), 0.55, 1e-12);
  EXPECT_NEAR(ae.at(200000), 0.05, 1e-12);
  EXPECT_DOUBLE_EQ(ae.at(400000), 0.0);
  for (const std::string bad : {"x", "0:1,0:2", "1,2", "", "0:"}) {
    EXPECT_THROW(LambdaSchedule(bad, "translation.ae_lambda"), ConfigError) << bad;
  }
}

TEST(Noise, MaskTokensPredictsFifteenPercentEightyTenTen) {
  std::mt19937_64 rng(11);
  const MaskOptions options{0.15, 0, 4, 100};
  std::vector<int64_t> sentence;
  for (int64_t i = 0; i < 40; ++i) sentence.push_back(10 + i);
  int64_t predicted = 0, masked = 0, random = 0, kept = 0, total = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    const MaskedTokens out = mask_tokens(sentence, options, rng);
    ASSERT_EQ(out.input.size(), sentence.size());
    for (size_t i = 0; i < sentence.size(); ++i) {
      ++total;
      if (!out.predict[i]) {
        EXPECT_EQ(out.input[i], sentence[i]) << "a token not predicted is left alone";
        continue;
      }
      ++predicted;
      if (out.input[i] == 0) {
        ++masked;
      } else if (out.input[i] == sentence[i]) {
        ++kept;
      } else {
        ++random;
        EXPECT_GE(out.input[i], 4) << "random ids skip the special tokens";
        EXPECT_LT(out.input[i], 100);
      }
    }
  }
  // 40,000 tokens, ~6,000 predicted: each share within 5 standard deviations.
  EXPECT_NEAR(static_cast<double>(predicted) / static_cast<double>(total), 0.15, 0.01);
  const double p = static_cast<double>(predicted);
  EXPECT_NEAR(static_cast<double>(masked) / p, 0.8, 0.03);
  EXPECT_NEAR(static_cast<double>(random) / p, 0.1, 0.02);  // (a random id equal to the token counts as kept)
  EXPECT_NEAR(static_cast<double>(kept) / p, 0.1, 0.02);
  // A short sentence still predicts one token; an empty one none.
  for (int trial = 0; trial < 50; ++trial) {
    const MaskedTokens one = mask_tokens({42}, options, rng);
    EXPECT_TRUE(one.predict[0]);
  }
  EXPECT_TRUE(mask_tokens({}, options, rng).predict.empty());
}

TEST(TranslationTask, MaskedLanguageModellingBatchesTheEncoderAlone) {
  if (world_size() != 1) GTEST_SKIP() << "single-process checks";
  const Config config = translation_config(false, kMlmOnly);
  TranslationTask task(config);
  EXPECT_EQ(task.metric_names(), (std::vector<std::string>{"mlm_loss"}));
  const int64_t gbs = config.train.global_batch_size, unk = task.tokenizer().unk_id();
  const Batch batch = task.batch(Split::kTrain, gbs, gbs, torch::kCPU);
  EXPECT_TRUE(batch.inputs.encoder_only);
  EXPECT_EQ(batch.inputs.decoder_input_ids.size(0), 0);
  EXPECT_EQ(batch.labels.sizes(), batch.inputs.input_ids.sizes()) << "labels of the source positions";
  int64_t predicted = 0;
  for (int64_t r = 0; r < gbs; ++r) {
    const TranslationTask::Sample x = task.sample(Split::kTrain, gbs + r);
    EXPECT_EQ(x.source_language, r % 3) << "slots mlm en, de, fr in turn";
    ASSERT_EQ(x.source.size(), x.target.size());
    const int64_t n = static_cast<int64_t>(x.source.size());
    EXPECT_EQ(batch.inputs.input_ids[n][r].item<int64_t>(), task.tokenizer().eos_id());
    EXPECT_EQ(batch.labels[n][r].item<int64_t>(), kIgnoreIndex) << "end of sequence is not predicted";
    for (int64_t i = 0; i < n; ++i) {
      const auto u = static_cast<size_t>(i);
      EXPECT_EQ(batch.inputs.input_ids[i][r].item<int64_t>(), x.source[u]);
      EXPECT_EQ(batch.labels[i][r].item<int64_t>(), x.predict[u] ? x.target[u] : kIgnoreIndex);
      if (!x.predict[u]) {
        EXPECT_EQ(x.source[u], x.target[u]);
      }
      predicted += x.predict[u];
      if (x.source[u] == unk) {
        EXPECT_TRUE(x.predict[u]) << "the mask token marks a predicted position";
      }
    }
  }
  EXPECT_DOUBLE_EQ(task.loss_units(Split::kTrain, gbs, gbs), static_cast<double>(predicted));
  // Validation: each dev sentence once, masked (differently per sentence, the same every time).
  EXPECT_EQ(task.num_samples(Split::kValid), 32);
  int64_t valid_predicted = 0, differ = 0;
  for (int64_t i = 0; i < 16; ++i) {
    const TranslationTask::Sample v = task.sample(Split::kValid, i), w = task.sample(Split::kValid, i + 16);
    valid_predicted += std::count(v.predict.begin(), v.predict.end(), true);
    EXPECT_EQ(v.source, task.sample(Split::kValid, i).source);
    // Sentence i + 16 is the German of pair i; the same length of masks drawn alike would be a bug.
    differ += v.predict != w.predict;
  }
  EXPECT_GE(valid_predicted, 16) << "every validation sentence predicts a token";
  EXPECT_GT(differ, 0);
  const Batch valid = task.batch(Split::kValid, 0, 4, torch::kCPU);
  EXPECT_TRUE(valid.inputs.encoder_only);
  EXPECT_GT((valid.labels != kIgnoreIndex).sum().item<int64_t>(), 0);
}

TEST(TranslationTask, DecoderStartsAsACopyOfThePretrainedEncoder) {
  if (world_size() != 1) GTEST_SKIP() << "single-process checks";
  const fs::path dir = corpus_dir() / "mlm_run", init = corpus_dir() / "mlm_init";
  remove_tree(dir);
  remove_tree(init);
  const Config mlm =
      translation_config(false, with(kMlmOnly, {"checkpoint.save=" + dir.string(), "train.train_iters=40"}));
  const TrainResult pretrained = train_recorded(mlm, MPI_COMM_SELF, 1, true, false, task_factory(mlm)).result;
  const auto mean_loss = [&](size_t begin) {
    double sum = 0;
    for (size_t i = begin; i < begin + 10; ++i) sum += pretrained.steps.at(i).metrics.at("mlm_loss");
    return sum / 10;
  };
  EXPECT_LT(mean_loss(30), mean_loss(0) - 0.2) << "masked language modelling learns";
  ProcessGroups groups(Topology(layout_of(ParallelConfig{}, 1)), comm_options(), MPI_COMM_SELF);
  // The embeddings (positions, languages, embedding_norm 2) + 2 layers x (self-attention 8, its
  // norm 2, mlp 4, its norm 2).
  EXPECT_EQ(init_decoder_checkpoint(dir.string(), init.string(), groups), 36);
  const Config translation = translation_config(false, {"checkpoint.load=" + init.string()});
  TrainState state(translation, groups, device());
  Checkpointer(state).load(init.string());
  EXPECT_EQ(state.step, 0);
  std::map<std::string, torch::Tensor> params;
  for (const auto& item : state.model->named_parameters()) params[item.key()] = item.value();
  std::map<std::string, torch::Tensor> trained;
  for (const auto& p : pretrained.final_params) trained[p.name] = p.value;
  for (const std::string name : {"encoder.layers.1.mlp.up_proj.weight", "shared.weight", "encoder.embed_languages.weight"}) {
    ASSERT_TRUE(params.count(name)) << name;
    EXPECT_TRUE(torch::equal(params[name].to(torch::kFloat).cpu(), trained.at(name))) << name << " is the pretrained one";
  }
  for (const std::string name : {"layers.0.self_attn.q_proj.weight", "layers.1.mlp.down_proj.bias", "embed_positions.weight",
                                 "layers.1.self_attn_norm.weight"}) {
    ASSERT_TRUE(params.count("decoder." + name)) << name;
    EXPECT_TRUE(torch::equal(params["decoder." + name], params["encoder." + name])) << name;
  }
  EXPECT_FALSE(torch::equal(params["decoder.layers.0.cross_attn.q_proj.weight"],
                            params["decoder.layers.0.self_attn.q_proj.weight"]))
      << "cross-attention keeps its own initialization";
  // A folder without a checkpoint is refused with a message.
  EXPECT_THROW(init_decoder_checkpoint((corpus_dir() / "nothing").string(), init.string(), groups), CheckpointError);
}

TEST(TranslationTask, BatchesAndBackTranslationsComeFromTheModel) {
  if (world_size() != 1) GTEST_SKIP() << "single-process checks";
  const Config config = translation_config(false, {});
  ProcessGroups groups(Topology(layout_of(config.parallel, 1)), comm_options(), MPI_COMM_SELF);
  TrainState state(config, groups, device());
  TranslationTask task(config);
  const int64_t gbs = config.train.global_batch_size;
  // Slots: ae en, ae de, bt en-de-en, bt de-en-de, para en-fr, para fr-en; sample i is slot i % 6.
  EXPECT_EQ(task.metric_names(), (std::vector<std::string>{"ae_loss", "bt_loss", "para_loss"}));
  EXPECT_THROW(task.batch(Split::kTrain, 0, gbs, torch::kCPU), InternalError);  // no prepare() yet
  task.prepare(Split::kTrain, gbs, gbs, *state.model, groups);
  EXPECT_TRUE(state.model->is_training()) << "prepare() leaves the model training";
  const Batch batch = task.batch(Split::kTrain, gbs, gbs, torch::kCPU);
  const int64_t eos = task.tokenizer().eos_id();
  for (int64_t r = 0; r < gbs; ++r) {
    const TranslationTask::Sample x = task.sample(Split::kTrain, gbs + r);
    const int64_t slot = r % 6;
    EXPECT_EQ(x.objective, slot / 2);
    EXPECT_EQ(batch.objectives[r].item<int64_t>(), slot / 2);
    // The source ends with EOS right after its tokens, the decoder starts with BOS.
    EXPECT_EQ(batch.inputs.input_ids[static_cast<int64_t>(x.source.size())][r].item<int64_t>(), eos);
    EXPECT_EQ(batch.inputs.decoder_input_ids[0][r].item<int64_t>(), task.tokenizer().bos_id());
    EXPECT_EQ(batch.labels[static_cast<int64_t>(x.target.size())][r].item<int64_t>(), eos);
    if (slot == 0) {
      EXPECT_NEAR(batch.weights[r].item<float>(), 1.0 - 0.5 / 4, 1e-6) << "ae_lambda at step 1";
    }
    if (slot == 2 || slot == 3) {
      // Back-translation: the model's greedy translation of the target into the other language.
      const int64_t a = slot == 2 ? 0 : 1, b = slot == 2 ? 1 : 0;
      EXPECT_EQ(x.source_language, b);
      EXPECT_EQ(x.target_language, a);
      std::vector<int64_t> source = x.target;
      source.push_back(eos);
      GenerationOptions options;
      options.max_length_a = 1.3;
      options.max_length_b = 5;
      options.eos_token_ids = {eos};
      options.pad_token_id = 3;
      options.decoder_start_token_id = 1;
      options.source_language = a;
      options.target_language = b;
      torch::NoGradGuard no_grad;
      const torch::Tensor ids = torch::tensor(source, torch::kLong).reshape({1, -1});
      // Alone, the sentence would get max_len from its own length; prepare() used the batch's
      // longest: decode further and compare the prefix prepare() kept.
      options.max_length_a = 0;
      options.max_new_tokens = 40;
      const torch::Tensor out = generate(*state.model, groups, ids, torch::Tensor(), options);
      std::vector<int64_t> expected;
      for (int64_t c = 1; c < out.size(1) && out[0][c].item<int64_t>() != eos; ++c) {
        expected.push_back(out[0][c].item<int64_t>());
      }
      if (expected.size() > x.source.size()) expected.resize(x.source.size());  // cut where prepare() stopped
      EXPECT_EQ(x.source, expected) << "sample " << gbs + r;
      state.model->train();
    }
  }
  // Validation: the dev pairs in both directions, weight 1.
  EXPECT_EQ(task.num_samples(Split::kValid), 32);
  const TranslationTask::Sample v0 = task.sample(Split::kValid, 0), v16 = task.sample(Split::kValid, 16);
  EXPECT_EQ(v0.source, v16.target);
  EXPECT_EQ(v0.source_language, 0);
  EXPECT_EQ(v16.source_language, 1);
}

TEST(TranslationTask, LayoutsMatchSingleProcessOverFourSteps) {
  const int world = world_size();
  struct Case {
    bool moe;
    std::vector<std::string> layout;
    bool mlm = false;  // the masked language modelling run (encoder only)
  };
  const std::vector<Case> cases{
      {false, {"parallel.tp=2", "parallel.sequence_parallel=true"}},
      {false, {"parallel.pp=2", "parallel.distributed_optimizer=true"}},
      {true, {"parallel.tp=2", "parallel.ep=2", "parallel.etp=1", "parallel.sequence_parallel=true"}},
      {true, {"parallel.ep=4"}},
      {false, {"parallel.tp=2", "parallel.sequence_parallel=true"}, true},
      {true, {"parallel.pp=2", "parallel.ep=2"}, true},
  };
  std::map<std::pair<bool, bool>, Recorded> references;
  const auto reference_of = [&](bool moe, bool mlm) -> const Recorded& {
    const std::pair<bool, bool> key{moe, mlm};
    if (!references.count(key)) {
      references[key] = train_translation(translation_config(moe, mlm ? kMlmOnly : std::vector<std::string>{}),
                                          MPI_COMM_SELF, 1);
      const auto& steps = references[key].result.steps;
      for (const std::string& name : mlm ? std::vector<std::string>{"mlm_loss"}
                                        : std::vector<std::string>{"ae_loss", "bt_loss", "para_loss"}) {
        EXPECT_GT(steps.front().metrics.at(name), 0) << name;
      }
      if (!mlm) {  // (four steps of masked tokens, each a new draw, are too few to show it)
        EXPECT_LT(steps.back().lm_loss, steps.front().lm_loss) << "the loss should fall";
      }
      if (moe) {
        EXPECT_GT(steps.front().aux_loss, 0) << "the routers' load-balancing loss is counted";
      }
    }
    return references[key];
  };
  int checked = 0;
  double worst = 0, worst_grad = 0;
  if (world == 1) {
    for (const bool moe : {false, true}) {
      for (const bool mlm : {false, true}) reference_of(moe, mlm);
    }
    return;
  }
  for (const Case& c : cases) {
    const Config config = translation_config(c.moe, with(c.layout, c.mlm ? kMlmOnly : std::vector<std::string>{}));
    try {
      validate_config(config, world);
    } catch (const ConfigError&) {
      continue;
    }
    SCOPED_TRACE(fmt::format("world {} {}{}: {}", world, c.moe ? "MoE" : "dense", c.mlm ? " MLM" : "",
                             fmt::join(c.layout, " ")));
    const Recorded& reference = reference_of(c.moe, c.mlm);
    const Recorded run = train_translation(config, MPI_COMM_WORLD, world);
    worst = std::max(worst, expect_same_steps(run, reference));
    worst_grad = std::max(worst_grad, expect_same_gradients(run, reference));
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no layout of the cases fits " << world << " ranks";
  if (world_rank() == 0) {
    std::cout << fmt::format("{} layouts; worst relative difference of a loss or norm {:.3g}, of a gradient {:.3g}\n",
                             checked, worst, worst_grad);
  }
}

TEST(TranslationTask, TranslateGivesALinePerInputInEveryLayout) {
  const int world = world_size();
  const std::vector<std::string> lines{"the red house is old today", "", "the blue house is new today", "the"};
  std::vector<std::string> reference;
  for (const std::vector<std::string>& layout :
       std::vector<std::vector<std::string>>{{}, {"parallel.tp=2"}, {"parallel.pp=2"}}) {
    const Config config = translation_config(false, layout);
    const bool single = layout.empty();
    try {
      validate_config(config, single ? 1 : world);
    } catch (const ConfigError&) {
      continue;
    }
    if (!single && world == 1) continue;
    ProcessGroups groups(Topology(layout_of(config.parallel, single ? 1 : world)), comm_options(),
                         single ? MPI_COMM_SELF : MPI_COMM_WORLD);
    TrainState state(config, groups, device());
    DataConfig data = config.data;
    const std::unique_ptr<TextTokenizer> tokenizer = make_tokenizer(data);
    for (const int64_t beams : {1, 3}) {
      TranslateOptions options{"en", "de", beams, 2};
      const std::vector<std::string> out = translate_lines(*state.model, groups, *tokenizer, config, lines, options);
      ASSERT_EQ(out.size(), lines.size());
      EXPECT_EQ(out[1], "") << "an empty line stays empty";
      if (single && beams == 1) reference = out;
      if (beams == 1) {
        EXPECT_EQ(out, reference) << fmt::format("{}", fmt::join(layout, " "));
      }
    }
    EXPECT_THROW(translate_lines(*state.model, groups, *tokenizer, config, lines, TranslateOptions{"en", "xx"}),
                 ConfigError);
  }
}

TEST(TranslationTask, SamplingTestPairsAndWeightsFollowTheirKeys) {
  if (world_size() != 1) GTEST_SKIP() << "single-process checks";
  const Config config = translation_config(
      false, {"translation.bt_temperature=1.5", "translation.test=en-de=dev", "translation.para_lambda=0.25",
              "translation.bt_lambda=0:2,2:0", "translation.word_shuffle=0", "translation.word_dropout=0",
              "translation.word_blank=0"});
  ProcessGroups groups(Topology(layout_of(config.parallel, 1)), comm_options(), MPI_COMM_SELF);
  TrainState state(config, groups, device());
  TranslationTask task(config);
  const int64_t gbs = config.train.global_batch_size;
  // Sampled back-translations: the same for the same step, not all the greedy ones.
  task.prepare(Split::kTrain, gbs, gbs, *state.model, groups);
  const TranslationTask::Sample first = task.sample(Split::kTrain, gbs + 2);
  task.prepare(Split::kTrain, gbs, gbs, *state.model, groups);
  EXPECT_EQ(task.sample(Split::kTrain, gbs + 2).source, first.source) << "sampling is seeded by the step";
  Config greedy_config = config;
  greedy_config.translation.bt_temperature = 0;
  TranslationTask greedy(greedy_config);
  greedy.prepare(Split::kTrain, gbs, gbs, *state.model, groups);
  int differ = 0;
  for (int64_t r = 0; r < gbs; ++r) {
    if (r % 6 == 2 || r % 6 == 3) {
      differ += task.sample(Split::kTrain, gbs + r).source != greedy.sample(Split::kTrain, gbs + r).source;
    }
  }
  EXPECT_GT(differ, 0) << "bt_temperature 1.5 samples";
  // Weights at step 1: bt 2 -> 0 over two steps gives 1; para 0.25.
  const Batch batch = task.batch(Split::kTrain, gbs, gbs, torch::kCPU);
  EXPECT_NEAR(batch.weights[2].item<float>(), 1.0, 1e-6);
  EXPECT_NEAR(batch.weights[4].item<float>(), 0.25, 1e-6);
  // Without noise the denoising source is the sentence itself.
  const TranslationTask::Sample ae = task.sample(Split::kTrain, gbs);
  EXPECT_EQ(ae.source, ae.target);
  // translation.test: the dev pairs in both directions.
  EXPECT_EQ(task.num_samples(Split::kTest), 32);
}

TEST(TranslationTask, ConfigErrorsNameTheirKey) {
  const auto expect_key = [](const std::vector<std::string>& overrides, const std::string& key) {
    try {
      TranslationTask task(translation_config(false, overrides));
      ADD_FAILURE() << "no error for " << fmt::format("{}", fmt::join(overrides, " "));
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  expect_key({"train.global_batch_size=8"}, "train.global_batch_size");
  expect_key({"translation.ae=en xx"}, "translation.ae");
  expect_key({"translation.bt=en-de-fr"}, "translation.bt");
  expect_key({"translation.para=en-de"}, "translation.para");
  expect_key({"translation.ae=\"\"", "translation.bt=\"\"", "translation.para=\"\""}, "translation.ae");
  expect_key({"model.num_languages=2"}, "model.num_languages");
  expect_key({"model.pad_token_id=0"}, "model.pad_token_id");
  expect_key({"translation.bt_lambda=fast"}, "translation.bt_lambda");
  expect_key({"translation.word_dropout=1.5"}, "translation.word_dropout");
  expect_key({"translation.bt_max_len_a=0"}, "translation.bt_max_len_a");
  expect_key({"model.decoder_start_token_id=2"}, "model.decoder_start_token_id");
  expect_key({"translation.max_length=1000"}, "translation.max_length");
  expect_key({"translation.valid=\"\"", "train.eval_interval=2"}, "translation.valid");
  expect_key({"translation.mlm=en"}, "translation.mlm");
  expect_key(with(kMlmOnly, {"translation.mlm_probability=0"}), "translation.mlm_probability");
  EXPECT_THROW(TranslationTask(translation_config(false, {"translation.mono=en=nothing de=train.de"})), DataError);
}

}  // namespace
}  // namespace foldtron::testing
