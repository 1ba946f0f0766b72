// checkpoint: safetensors reading (the reference tiny Hugging Face models: names, shapes, dtypes,
// and the stored cross-entropy recomputed from the stored logits), write/read round trips of every
// dtype, sharded model directories, config.json import for Llama / Mixtral / Qwen2-MoE, and one
// test per error message.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "checkpoint/distributed.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/hf_names.h"
#include "checkpoint/model_state.h"
#include "checkpoint/safetensors.h"
#include "config/compare.h"
#include "core/checksum.h"
#include "core/errors.h"
#include "core/files.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string hf_dir(const std::string& model) { return std::string(FOLDTRON_REFERENCE_DIR) + "/hf/" + model; }

#define SKIP_WITHOUT_REFERENCE(dir) \
  if (!fs::is_directory(dir)) GTEST_SKIP() << "reference model not found at " << (dir) << " (FOLDTRON_REFERENCE_DIR)"

// A fresh, empty directory for one test.
fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("foldtron_test_checkpoint_" + name);
  remove_tree(dir);
  fs::create_directories(dir);
  return dir;
}

// The error `f` throws (a test failure when it throws none or another type).
template <typename E>
E error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  ADD_FAILURE() << "expected an error, none was thrown";
  return E("(no error)", "");
}

void expect_mentions(const Error& e, std::initializer_list<std::string> parts) {
  const std::string message = e.what();
  for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message << "\n  lacks: " << part;
  EXPECT_FALSE(e.hint().empty()) << message;
}

// A file of: 8-byte little-endian `length` (default: the header's size), `header`, `data`.
std::string write_raw(const fs::path& path, const std::string& header, const std::string& data, int64_t length = -1) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
  return path.string();
}

void write_json(const fs::path& path, const json& j) { std::ofstream(path) << j.dump(2); }

// ---- the reference models ----

TEST(Safetensors, ReadsMixtralTinyWeights) {
  const std::string dir = hf_dir("mixtral-tiny");
  SKIP_WITHOUT_REFERENCE(dir);
  const SafetensorsFile file(dir + "/model.safetensors");
  const std::vector<std::string> names = file.names();
  // embed, lm_head, final norm + 2 layers x (4 experts x 3 + gate + 2 norms + q/k/v/o)
  ASSERT_EQ(names.size(), 3u + 2u * 19u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(names.front(), "lm_head.weight");
  EXPECT_EQ(names.back(), "model.norm.weight");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.shape("model.embed_tokens.weight"), (std::vector<int64_t>{320, 64}));
  EXPECT_EQ(file.shape("model.layers.1.block_sparse_moe.experts.3.w2.weight"), (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(file.shape("model.layers.0.block_sparse_moe.gate.weight"), (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(file.shape("model.layers.0.self_attn.k_proj.weight"), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(file.shape("model.norm.weight"), (std::vector<int64_t>{64}));
  for (const std::string& name : names) {
    EXPECT_EQ(file.dtype(name), torch::kFloat32) << name;
    const torch::Tensor t = file.load(name);
    EXPECT_EQ(t.sizes().vec(), file.shape(name)) << name;
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
    EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << name;
    EXPECT_GT(t.abs().sum().item<double>(), 0.0) << name;
  }
}

TEST(Safetensors, ReadsMixtralTinyReferenceOutputs) {
  const std::string dir = hf_dir("mixtral-tiny");
  SKIP_WITHOUT_REFERENCE(dir);
  const SafetensorsFile file(dir + "/reference.safetensors");
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_TRUE(file.has("input_ids"));
  EXPECT_FALSE(file.has("nope"));
  EXPECT_EQ(file.dtype("input_ids"), torch::kInt64);
  EXPECT_EQ(file.shape("input_ids"), (std::vector<int64_t>{2, 24}));
  EXPECT_EQ(file.dtype("logits"), torch::kFloat32);
  EXPECT_EQ(file.shape("logits"), (std::vector<int64_t>{2, 24, 320}));
  EXPECT_EQ(file.shape("hidden_states.2"), (std::vector<int64_t>{2, 24, 64}));
  EXPECT_EQ(file.shape("ce_loss"), (std::vector<int64_t>{1}));
  EXPECT_EQ(file.shape("grad.model.layers.0.mlp.experts.gate_up_proj"), (std::vector<int64_t>{4, 192, 64}));

  const torch::Tensor ids = file.load("input_ids");  // [b=2, s=24] int64
  EXPECT_GE(ids.min().item<int64_t>(), 0);
  EXPECT_LT(ids.max().item<int64_t>(), 320);
  // The stored next-token cross-entropy, recomputed from the stored logits: both tensors (I64
  // and F32, at different offsets) were read from the right bytes.
  const torch::Tensor logits = file.load("logits");  // [b, s, V]
  const torch::Tensor loss = torch::nn::functional::cross_entropy(
      logits.slice(1, 0, -1).reshape({-1, 320}), ids.slice(1, 1).reshape({-1}));
  EXPECT_NEAR(loss.item<double>(), file.load("ce_loss").item<double>(), 1e-5);
}

TEST(Safetensors, ReadsEveryReferenceModel) {
  for (const std::string model : {"llama-tiny", "mixtral-tiny", "qwen2moe-tiny", "qwen3moe-tiny"}) {
    const std::string dir = hf_dir(model);
    SKIP_WITHOUT_REFERENCE(dir);
    const HfCheckpoint checkpoint(dir);
    EXPECT_TRUE(checkpoint.has("model.embed_tokens.weight")) << model;
    EXPECT_EQ(checkpoint.shape("model.embed_tokens.weight"), (std::vector<int64_t>{320, 64})) << model;
    const SafetensorsFile reference(dir + "/reference.safetensors");
    EXPECT_EQ(reference.shape("logits"), (std::vector<int64_t>{2, 24, 320})) << model;
    EXPECT_EQ(reference.dtype("input_ids"), torch::kInt64) << model;
  }
  // Llama ties its embeddings: no separate output layer in the file.
  EXPECT_FALSE(HfCheckpoint(hf_dir("llama-tiny")).has("lm_head.weight"));
  EXPECT_TRUE(HfCheckpoint(hf_dir("qwen2moe-tiny")).has("model.layers.1.mlp.shared_expert_gate.weight"));
}

TEST(HfCheckpoint, SingleFileDirectoryMatchesTheFile) {
  const std::string dir = hf_dir("mixtral-tiny");
  SKIP_WITHOUT_REFERENCE(dir);
  const HfCheckpoint checkpoint(dir);
  const SafetensorsFile file(dir + "/model.safetensors");
  EXPECT_EQ(checkpoint.names(), file.names());
  const std::string name = "model.layers.1.self_attn.q_proj.weight";
  EXPECT_EQ(checkpoint.shape(name), (std::vector<int64_t>{64, 64}));
  EXPECT_TRUE(torch::equal(checkpoint.load(name), file.load(name)));
}

// ---- writing ----

std::vector<std::pair<std::string, torch::Tensor>> every_dtype() {
  // A CPU generator of our own rather than torch::manual_seed, which also seeds CUDA: this binary
  // crashed in this test on the GPU image (the seeding is the suspect).
  at::Generator generator = at::detail::createCPUGenerator(7);
  const torch::Tensor base = torch::randn({3, 5}, generator, torch::kFloat);  // [3, 5]
  return {
      {"f64", base.to(torch::kFloat64)},
      {"f32", base},
      {"f16", base.to(torch::kFloat16)},
      {"bf16", base.to(torch::kBFloat16)},
      {"i64", torch::arange(-6, 6, torch::kInt64).reshape({2, 2, 3})},
      {"i32", torch::tensor({-2147483647 - 1, 0, 2147483647}, torch::kInt32)},
      {"i16", torch::tensor({-32768, 1, 32767}, torch::kInt16)},
      {"i8", torch::tensor({-128, 0, 127}, torch::kInt8)},
      {"u8", torch::tensor({0, 1, 255}, torch::kUInt8)},
      {"bool", base.gt(0)},
      {"scalar", torch::tensor(3.5)},                     // shape []
      {"empty", torch::zeros({0, 4})},                    // no bytes
      {"transposed", base.t()},                           // non-contiguous [5, 3]
      {"bf16.slice", base.to(torch::kBFloat16).slice(1, 1, 4)},
  };
}

TEST(Safetensors, RoundTripsEveryDtype) {
  const fs::path dir = fresh_dir("round_trip");
  const std::string path = (dir / "t.safetensors").string();
  const auto tensors = every_dtype();
  write_safetensors(path, tensors, {{"format", "pt"}, {"step", "12"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const SafetensorsFile file(path);
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : tensors) expected_names.push_back(name);
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ(file.names(), expected_names);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "12"}}));
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(file.dtype(name), t.scalar_type()) << name;
    EXPECT_EQ(file.shape(name), t.sizes().vec()) << name;
    const torch::Tensor back = file.load(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(back, t)) << name;
  }

  // The header is padded to 8 bytes and every tensor starts aligned to its element size.
  std::ifstream in(path, std::ios::binary);
  unsigned char bytes[8];
  in.read(reinterpret_cast<char*>(bytes), 8);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | bytes[i];
  EXPECT_EQ(length % 8, 0u);
  std::string header(length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(length));
  const json h = json::parse(header);
  EXPECT_EQ(h.at("__metadata__").at("step"), "12");
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(h.at(name).at("data_offsets")[0].get<uint64_t>() % t.element_size(), 0u) << name;
  }

  // Writing again replaces the file.
  write_safetensors(path, {{"only", torch::ones({2})}});
  EXPECT_EQ(SafetensorsFile(path).names(), std::vector<std::string>{"only"});
  EXPECT_TRUE(SafetensorsFile(path).metadata().empty());
}

TEST(HfCheckpoint, LoadsAShardedDirectory) {
  const fs::path dir = fresh_dir("sharded");
  const auto tensors = every_dtype();
  std::vector<std::pair<std::string, torch::Tensor>> first(tensors.begin(), tensors.begin() + 6);
  std::vector<std::pair<std::string, torch::Tensor>> second(tensors.begin() + 6, tensors.end());
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(), first);
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), second);
  json index = {{"metadata", {{"total_size", 1234}}}, {"weight_map", json::object()}};
  for (const auto& [name, t] : first) index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, t] : second) index["weight_map"][name] = "model-00002-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", index);

  const HfCheckpoint checkpoint(dir.string());
  const std::vector<std::string> names = checkpoint.names();
  EXPECT_EQ(names.size(), tensors.size());
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(checkpoint.has(name)) << name;
    EXPECT_EQ(checkpoint.shape(name), t.sizes().vec()) << name;
    EXPECT_EQ(checkpoint.dtype(name), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(checkpoint.load(name), t)) << name;
  }
  EXPECT_FALSE(checkpoint.has("missing"));
}

// ---- config.json import ----

TEST(HfConfig, MixtralTiny) {
  const std::string dir = hf_dir("mixtral-tiny");
  SKIP_WITHOUT_REFERENCE(dir);
  const Config c = hf_model_config(dir);
  const ModelConfig& m = c.model;
  EXPECT_EQ(m.architecture, Architecture::kMixtral);
  EXPECT_EQ(m.hidden_size, 64);
  EXPECT_EQ(m.num_layers, 2);
  EXPECT_EQ(m.num_attention_heads, 4);
  EXPECT_EQ(m.num_query_groups, 2);
  EXPECT_EQ(m.head_dim, 0);  // null
  EXPECT_EQ(m.kv_channels(), 16);
  EXPECT_EQ(m.ffn_hidden_size, 96);
  EXPECT_EQ(m.vocab_size, 320);
  EXPECT_EQ(m.max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(m.norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(m.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(m.init_std, 0.02);
  EXPECT_EQ(m.normalization, Normalization::kRmsNorm);
  EXPECT_EQ(m.activation, Activation::kSwiglu);
  EXPECT_FALSE(m.qkv_bias);
  EXPECT_FALSE(m.tie_embeddings);
  EXPECT_EQ(m.params_dtype, DType::kFloat32);
  const MoEConfig& moe = c.moe;
  EXPECT_EQ(moe.num_experts, 4);
  EXPECT_EQ(moe.topk, 2);
  EXPECT_EQ(moe.expert_ffn_hidden_size, 96);
  EXPECT_EQ(moe.shared_expert_ffn_hidden_size, 0);
  EXPECT_FALSE(moe.shared_expert_gate);
  EXPECT_EQ(moe.router_score, RouterScore::kSoftmax);
  EXPECT_TRUE(moe.router_pre_softmax);
  EXPECT_TRUE(moe.normalize_topk);
  EXPECT_EQ(moe.layer_step, 1);
  EXPECT_TRUE(moe.dense_layers.empty());
  EXPECT_DOUBLE_EQ(moe.aux_loss_coeff, 0.02);
}

TEST(HfConfig, Qwen2MoeTiny) {
  const std::string dir = hf_dir("qwen2moe-tiny");
  SKIP_WITHOUT_REFERENCE(dir);
  const Config c = hf_model_config(dir);
  const ModelConfig& m = c.model;
  EXPECT_EQ(m.architecture, Architecture::kQwen2Moe);
  EXPECT_EQ(m.hidden_size, 64);
  EXPECT_EQ(m.num_layers, 2);
  EXPECT_EQ(m.num_attention_heads, 4);
  EXPECT_EQ(m.num_query_groups, 2);
  EXPECT_EQ(m.head_dim, 0);  // absent
  EXPECT_EQ(m.ffn_hidden_size, 96);
  EXPECT_EQ(m.vocab_size, 320);
  EXPECT_DOUBLE_EQ(m.norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(m.rope_theta, 10000.0);
  EXPECT_TRUE(m.qkv_bias);
  EXPECT_FALSE(m.tie_embeddings);
  const MoEConfig& moe = c.moe;
  EXPECT_EQ(moe.num_experts, 6);
  EXPECT_EQ(moe.topk, 2);
  EXPECT_EQ(moe.expert_ffn_hidden_size, 48);
  EXPECT_EQ(moe.shared_expert_ffn_hidden_size, 80);
  EXPECT_TRUE(moe.shared_expert_gate);
  EXPECT_TRUE(moe.router_pre_softmax);
  EXPECT_FALSE(moe.normalize_topk);
  EXPECT_EQ(moe.layer_step, 1);
  EXPECT_TRUE(moe.dense_layers.empty());
  EXPECT_DOUBLE_EQ(moe.aux_loss_coeff, 0.01);
}

TEST(HfConfig, LlamaTiny) {
  const std::string dir = hf_dir("llama-tiny");
  SKIP_WITHOUT_REFERENCE(dir);
  const Config c = hf_model_config(dir);
  const ModelConfig& m = c.model;
  EXPECT_EQ(m.architecture, Architecture::kLlama);
  EXPECT_EQ(m.hidden_size, 64);
  EXPECT_EQ(m.num_layers, 2);
  EXPECT_EQ(m.num_attention_heads, 4);
  EXPECT_EQ(m.num_query_groups, 2);
  EXPECT_EQ(m.head_dim, 16);
  EXPECT_EQ(m.ffn_hidden_size, 160);
  EXPECT_EQ(m.vocab_size, 320);
  EXPECT_EQ(m.max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(m.norm_eps, 1e-6);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_FALSE(m.qkv_bias);
  EXPECT_EQ(c.moe.num_experts, 0);
  EXPECT_FALSE(c.moe.enabled());
}

TEST(HfConfig, Qwen3MoeAndMarian) {
  const std::string qwen3 = hf_dir("qwen3moe-tiny"), marian = hf_dir("marian-tiny");
  SKIP_WITHOUT_REFERENCE(qwen3);
  const Config q = hf_model_config(qwen3);
  EXPECT_EQ(q.model.architecture, Architecture::kQwen3Moe);
  EXPECT_TRUE(q.model.qk_norm);
  EXPECT_FALSE(q.model.qkv_bias);
  EXPECT_EQ(q.model.kv_channels(), 16);  // explicit head_dim, not hidden / heads
  EXPECT_EQ(q.moe.num_experts, 8);       // transformers 5 writes num_local_experts
  EXPECT_EQ(q.moe.shared_expert_ffn_hidden_size, 0);
  EXPECT_TRUE(q.moe.normalize_topk);
  EXPECT_DOUBLE_EQ(q.model.rope_theta, 1e6);
  const Config m = hf_model_config(marian);
  EXPECT_EQ(m.model.architecture, Architecture::kMarian);
  EXPECT_TRUE(m.model.encoder_decoder());
  EXPECT_EQ(m.model.encoder_layers, 2);
  EXPECT_EQ(m.model.num_layers, 2);
  EXPECT_EQ(m.model.norm_position, NormPosition::kPost);
  EXPECT_EQ(m.model.position_embedding, PositionKind::kSinusoidal);
  EXPECT_EQ(m.model.normalization, Normalization::kLayerNorm);
  EXPECT_EQ(m.model.activation, Activation::kSilu);
  EXPECT_TRUE(m.model.linear_bias && m.model.scale_embeddings && m.model.final_logits_bias && m.model.tie_embeddings);
  EXPECT_EQ(m.model.pad_token_id, 0);
  EXPECT_EQ(m.model.decoder_start_token_id, 0);
}

TEST(HfConfig, AnotherFamilyIsRefused) {
  const fs::path dir = fresh_dir("gpt2");
  write_json(dir / "config.json", json{{"model_type", "gpt2"}});
  const auto e = error_of<CheckpointError>([&] { hf_model_config(dir.string()); });
  expect_mentions(e, {"gpt2", "llama, mixtral, qwen2_moe, qwen3_moe, marian", "config.json"});
}

// Minimal configs written by save_pretrained, independent of the reference folder.
json llama_config() {
  return {{"model_type", "llama"}, {"hidden_size", 32}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
          {"intermediate_size", 48}, {"vocab_size", 100}, {"max_position_embeddings", 128},
          {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"}};
}

json qwen2_moe_config() {
  json j = llama_config();
  j["model_type"] = "qwen2_moe";
  j["num_hidden_layers"] = 6;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 16;
  j["shared_expert_intermediate_size"] = 0;
  return j;
}

Config config_of(const std::string& name, const json& j) {
  const fs::path dir = fresh_dir(name);
  write_json(dir / "config.json", j);
  return hf_model_config(dir.string());
}

CheckpointError config_error(const std::string& name, const json& j) {
  return error_of<CheckpointError>([&] { config_of(name, j); });
}

TEST(HfConfig, DefaultsOfOptionalKeys) {
  const Config c = config_of("defaults", llama_config());
  EXPECT_EQ(c.model.num_query_groups, 4);  // num_key_value_heads absent: MHA
  EXPECT_EQ(c.model.head_dim, 0);
  EXPECT_DOUBLE_EQ(c.model.rope_theta, 10000.0);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.moe.num_experts, 0);

  json j = llama_config();
  j["rope_theta"] = 500000.0;  // transformers 4 spelling
  j["rope_scaling"] = nullptr;
  EXPECT_DOUBLE_EQ(config_of("top_level_theta", j).model.rope_theta, 500000.0);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};  // transformers 5 wins
  EXPECT_DOUBLE_EQ(config_of("nested_theta", j).model.rope_theta, 1e6);
}

TEST(HfConfig, Qwen2MoeSparseStepAndDenseLayers) {
  json j = qwen2_moe_config();
  j["decoder_sparse_step"] = 2;  // transformers: layer i sparse when (i + 1) % 2 == 0
  j["mlp_only_layers"] = {3};
  j["norm_topk_prob"] = true;
  j["num_key_value_heads"] = 2;
  const Config c = config_of("sparse_step", j);
  EXPECT_TRUE(c.model.qkv_bias);  // Qwen2-MoE always has q/k/v biases
  EXPECT_EQ(c.model.num_query_groups, 2);
  EXPECT_EQ(c.moe.num_experts, 8);
  EXPECT_TRUE(c.moe.normalize_topk);
  EXPECT_EQ(c.moe.shared_expert_ffn_hidden_size, 0);
  EXPECT_FALSE(c.moe.shared_expert_gate);
  EXPECT_EQ(c.moe.layer_step, 1);
  EXPECT_EQ(c.moe.dense_layers, (std::vector<int64_t>{0, 2, 3, 4}));  // sparse: 1, 5

  j = qwen2_moe_config();
  j.erase("num_experts");
  j["num_local_experts"] = 4;  // the other spelling
  j["qkv_bias"] = false;
  const Config other = config_of("local_experts", j);
  EXPECT_EQ(other.moe.num_experts, 4);
  EXPECT_FALSE(other.model.qkv_bias);
}

// ---- one test per error message ----

TEST(SafetensorsErrors, MissingFile) {
  const fs::path dir = fresh_dir("err_missing_file");
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile((dir / "nope.safetensors").string()); });
  expect_mentions(e, {"nope.safetensors", "does not exist"});
}

TEST(SafetensorsErrors, TruncatedFile) {
  const fs::path path = fresh_dir("err_truncated") / "t.safetensors";
  std::ofstream(path, std::ios::binary) << "abc";
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile(path.string()); });
  expect_mentions(e, {path.string(), "too short", "3 bytes"});
}

TEST(SafetensorsErrors, HeaderLengthLargerThanFile) {
  const std::string path = write_raw(fresh_dir("err_length") / "t.safetensors", "{}", "", 1000);
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile{path}; });
  expect_mentions(e, {path, "header length 1000", "larger than the 2 bytes"});
}

TEST(SafetensorsErrors, HeaderIsNotJson) {
  const std::string path = write_raw(fresh_dir("err_json") / "t.safetensors", "{\"a\": [1, ", "");
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile{path}; });
  expect_mentions(e, {path, "not valid JSON"});
}

TEST(SafetensorsErrors, UnknownDtype) {
  const std::string path = write_raw(fresh_dir("err_dtype") / "t.safetensors",
                                     R"({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", "ab");
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile{path}; });
  expect_mentions(e, {path, "'w'", "unknown dtype 'F8_E4M3'", "BF16"});
}

TEST(SafetensorsErrors, OffsetsDoNotMatchShape) {
  const std::string path = write_raw(fresh_dir("err_size") / "t.safetensors",
                                     R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})",
                                     std::string(24, '\0'));
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile{path}; });
  expect_mentions(e, {path, "'w'", "hold 20 bytes", "[2, 3]", "needs 24"});
}

TEST(SafetensorsErrors, OffsetsOutsideTheData) {
  const std::string path = write_raw(fresh_dir("err_range") / "t.safetensors",
                                     R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
                                     std::string(8, '\0'));
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile{path}; });
  expect_mentions(e, {path, "'w'", "[0, 16]", "outside the 8 data bytes"});
}

TEST(SafetensorsErrors, MalformedEntry) {
  const std::string path =
      write_raw(fresh_dir("err_entry") / "t.safetensors", R"({"w": {"dtype": "F32", "shape": [1]}})", "");
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile{path}; });
  expect_mentions(e, {path, "'w'", "no 'data_offsets'"});
}

TEST(SafetensorsErrors, MissingTensor) {
  const std::string path = (fresh_dir("err_missing_tensor") / "t.safetensors").string();
  write_safetensors(path, {{"a", torch::ones({2})}});
  const auto e = error_of<CheckpointError>([&] { SafetensorsFile(path).load("b"); });
  expect_mentions(e, {path, "'b'"});
}

TEST(SafetensorsErrors, WriteIntoMissingDirectory) {
  const std::string path = (fresh_dir("err_write") / "no" / "such" / "t.safetensors").string();
  const auto e = error_of<IoError>([&] { write_safetensors(path, {{"a", torch::ones({2})}}); });
  expect_mentions(e, {path + ".tmp", "cannot create"});
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsErrors, WriteDuplicateNameOrUnsupportedDtype) {
  const std::string path = (fresh_dir("err_write_names") / "t.safetensors").string();
  auto e = error_of<CheckpointError>([&] { write_safetensors(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}); });
  expect_mentions(e, {path, "'a' appears twice"});
  e = error_of<CheckpointError>([&] { write_safetensors(path, {{"c", torch::ones({1}, torch::kComplexFloat)}}); });
  expect_mentions(e, {"ComplexFloat", "cannot be stored"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(HfCheckpointErrors, MissingTensorNamesTensorAndDirectory) {
  const fs::path dir = fresh_dir("err_hf_tensor");
  write_safetensors((dir / "model.safetensors").string(), {{"a", torch::ones({2})}});
  const HfCheckpoint checkpoint(dir.string());
  const auto e = error_of<CheckpointError>([&] { checkpoint.load("model.layers.9.mlp.weight"); });
  expect_mentions(e, {"'model.layers.9.mlp.weight'", dir.string()});
}

TEST(HfCheckpointErrors, DirectoryWithoutWeights) {
  const fs::path dir = fresh_dir("err_hf_empty");
  auto e = error_of<CheckpointError>([&] { HfCheckpoint{dir.string()}; });
  expect_mentions(e, {dir.string(), "neither model.safetensors nor model.safetensors.index.json"});
  e = error_of<CheckpointError>([&] { HfCheckpoint{(dir / "absent").string()}; });
  expect_mentions(e, {(dir / "absent").string(), "does not exist"});
}

TEST(HfCheckpointErrors, MissingShard) {
  const fs::path dir = fresh_dir("err_hf_shard");
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(), {{"a", torch::ones({2})}});
  write_json(dir / "model.safetensors.index.json",
             {{"weight_map",
               {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}}});
  const auto e = error_of<CheckpointError>([&] { HfCheckpoint{dir.string()}; });
  expect_mentions(e, {"model-00002-of-00002.safetensors", "missing", dir.string()});
}

TEST(HfCheckpointErrors, InvalidIndex) {
  const fs::path dir = fresh_dir("err_hf_index");
  std::ofstream(dir / "model.safetensors.index.json") << R"({"metadata": {}})";
  const auto e = error_of<CheckpointError>([&] { HfCheckpoint{dir.string()}; });
  expect_mentions(e, {"model.safetensors.index.json", "no 'weight_map'"});
}

TEST(HfCheckpointErrors, IndexPointsAtTheWrongShard) {
  const fs::path dir = fresh_dir("err_hf_wrong_shard");
  write_safetensors((dir / "s1.safetensors").string(), {{"a", torch::ones({2})}});
  write_json(dir / "model.safetensors.index.json", {{"weight_map", {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}}}});
  const HfCheckpoint checkpoint(dir.string());
  const auto e = error_of<CheckpointError>([&] { checkpoint.load("b"); });
  expect_mentions(e, {"'b'", "s1.safetensors", "does not hold it"});
}

TEST(HfConfigErrors, MissingConfigFile) {
  const fs::path dir = fresh_dir("err_cfg_missing");
  const auto e = error_of<CheckpointError>([&] { hf_model_config(dir.string()); });
  expect_mentions(e, {(dir / "config.json").string(), "does not exist"});
}

TEST(HfConfigErrors, InvalidJson) {
  const fs::path dir = fresh_dir("err_cfg_json");
  std::ofstream(dir / "config.json") << "{\"model_type\": ";
  const auto e = error_of<CheckpointError>([&] { hf_model_config(dir.string()); });
  expect_mentions(e, {(dir / "config.json").string(), "not valid JSON"});
}

TEST(HfConfigErrors, MissingKey) {
  json j = llama_config();
  j.erase("hidden_size");
  expect_mentions(config_error("err_cfg_key", j), {"config.json", "required key 'hidden_size' is missing"});
  j = qwen2_moe_config();
  j.erase("moe_intermediate_size");
  expect_mentions(config_error("err_cfg_moe_key", j), {"'moe_intermediate_size' is missing"});
}

TEST(HfConfigErrors, WrongType) {
  json j = llama_config();
  j["num_attention_heads"] = "4";
  expect_mentions(config_error("err_cfg_type", j), {"config.json", "'num_attention_heads'", "expected an integer"});
  j = llama_config();
  j["rope_parameters"] = {{"rope_theta", "big"}};
  expect_mentions(config_error("err_cfg_nested_type", j), {"'rope_parameters.rope_theta'", "expected a number"});
}

TEST(HfConfigErrors, UnsupportedModelType) {
  json j = llama_config();
  j["model_type"] = "gpt2";
  expect_mentions(config_error("err_cfg_type_name", j), {"config.json", "model_type 'gpt2'", "llama, mixtral, qwen2_moe"});
}

TEST(HfConfigErrors, UnsupportedActivation) {
  json j = llama_config();
  j["hidden_act"] = "gelu";
  expect_mentions(config_error("err_cfg_act", j), {"config.json", "hidden_act 'gelu'"});
}

TEST(HfConfigErrors, ScaledRotary) {
  json j = llama_config();
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
  expect_mentions(config_error("err_cfg_yarn", j), {"rope_parameters.rope_type 'yarn'", "not supported"});
  j = llama_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_mentions(config_error("err_cfg_linear", j), {"rope_scaling.rope_type 'linear'"});
}

TEST(HfConfigErrors, UnsupportedBiases) {
  json j = llama_config();
  j["mlp_bias"] = true;
  expect_mentions(config_error("err_cfg_mlp_bias", j), {"mlp_bias: true"});
  j = llama_config();
  j["attention_bias"] = true;
  expect_mentions(config_error("err_cfg_attn_bias", j), {"attention_bias: true", "o_proj"});
}

TEST(HfConfigErrors, SlidingWindow) {
  json j = qwen2_moe_config();
  j["use_sliding_window"] = true;
  expect_mentions(config_error("err_cfg_qwen_window", j), {"use_sliding_window: true"});
  j = llama_config();
  j["model_type"] = "mixtral";
  j["num_local_experts"] = 4;
  j["num_experts_per_tok"] = 2;
  j["sliding_window"] = 4096;
  expect_mentions(config_error("err_cfg_mixtral_window", j), {"sliding_window 4096"});
  j["sliding_window"] = nullptr;
  EXPECT_EQ(config_of("mixtral_no_window", j).moe.num_experts, 4);
}

TEST(HfConfigErrors, BadSparseStep) {
  json j = qwen2_moe_config();
  j["decoder_sparse_step"] = 0;
  expect_mentions(config_error("err_cfg_step", j), {"decoder_sparse_step 0"});
}

}  // namespace
}  // namespace foldtron

namespace foldtron {
namespace {

// ---- streaming writes, distributed pieces, Hugging Face names ----

// The checksum of a stream does not depend on how it is split into updates, and it changes with
// one flipped bit, one more zero byte, or two words swapped.
TEST(Checksum, DependsOnTheBytesNotOnHowTheyArrive) {
  std::vector<unsigned char> bytes(1000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>((i * 131 + 7) % 251);
  const auto sum_of = [](const std::vector<unsigned char>& data, std::vector<size_t> splits) {
    Checksum sum;
    size_t at = 0;
    for (size_t split : splits) {
      sum.update(data.data() + at, split - at);
      at = split;
    }
    sum.update(data.data() + at, data.size() - at);
    return sum.value();
  };
  const uint64_t whole = sum_of(bytes, {});
  for (const std::vector<size_t>& splits : std::vector<std::vector<size_t>>{{1}, {7, 8, 9}, {31, 32, 33, 500}, {999}}) {
    EXPECT_EQ(sum_of(bytes, splits), whole) << splits.size() << " splits";
  }
  std::vector<unsigned char> flipped = bytes;
  flipped[517] ^= 0x10;
  EXPECT_NE(sum_of(flipped, {}), whole);
  std::vector<unsigned char> longer = bytes;
  longer.push_back(0);
  EXPECT_NE(sum_of(longer, {}), whole);
  std::vector<unsigned char> swapped = bytes;
  std::swap_ranges(swapped.begin(), swapped.begin() + 8, swapped.begin() + 32);
  EXPECT_NE(sum_of(swapped, {}), whole);
  EXPECT_EQ(Checksum::hex(0xabcull), "0000000000000abc");
}

TEST(SafetensorsWriter, StreamsTensorsInFileOrderAndLeavesNothingUnfinished) {
  const fs::path dir = fresh_dir("writer");
  const std::string path = (dir / "t.safetensors").string();
  {
    SafetensorsWriter writer(path, {{"b", torch::kFloat, {2}}, {"a", torch::kBFloat16, {3}}, {"c", torch::kFloat, {1}}});
    std::vector<std::string> order;
    for (const auto& entry : writer.order()) order.push_back(entry.name);
    EXPECT_EQ(order, (std::vector<std::string>{"b", "c", "a"})) << "larger elements first, then by name";
    writer.write(torch::ones({2}));
    const auto e = error_of<CheckpointError>([&] { writer.write(torch::ones({2})); });
    expect_mentions(e, {"'c'", "F32 [1]"});
    EXPECT_TRUE(fs::exists(path + ".tmp"));
  }
  EXPECT_FALSE(fs::exists(path + ".tmp")) << "an unfinished writer removes its temporary file";
  EXPECT_FALSE(fs::exists(path));
  SafetensorsWriter writer(path, {{"b", torch::kFloat, {2}}, {"a", torch::kBFloat16, {3}}});
  writer.write(torch::tensor({1.0F, 2.0F}));
  writer.write(torch::tensor({3.0F, 4.0F, 5.0F}).to(torch::kBFloat16));
  const WrittenFile written = writer.finish();
  EXPECT_EQ(written.bytes, fs::file_size(path));
  EXPECT_EQ(written.checksum, file_checksum(path));
  const SafetensorsFile file(path);
  EXPECT_TRUE(torch::equal(file.load("a"), torch::tensor({3.0F, 4.0F, 5.0F}).to(torch::kBFloat16)));
}

// A [2, 8, 3] expert stack split over etp 2 as gate|up blocks, each rank's shard saved in two
// flat ranges (as the distributed optimizer's shards are): the metadata's boxes put every
// element back, any box reads across pieces, and a gap is named.
TEST(DistributedCheckpoint, PiecesOfShardsReadBackAsGlobalTensors) {
  const fs::path dir = fresh_dir("pieces");
  const torch::Tensor full = torch::arange(48, torch::kFloat).reshape({2, 8, 3});
  std::vector<nlohmann::json> files;
  for (int64_t rank = 0; rank < 2; ++rank) {
    ParamInfo info;
    info.tp_split_dim = 1;
    info.split_parts = 2;
    info.split_rank = rank;
    info.split_size = 2;
    info.expert = true;
    info.num_experts = 2;
    const torch::Tensor local = shard_of(full, info);  // [2, 4, 3]: gate rows, then up rows
    std::vector<CheckpointItem> items;
    const torch::Tensor flat = local.flatten();
    add_items(items, "w", local, info, 0, 10, flat.narrow(0, 0, 10));
    add_items(items, "w", local, info, 10, 24, flat.narrow(0, 10, 14));
    // Two threads: each rank's pieces in two files.
    for (const auto& file : write_rank_files(dir.string(), rank, items, {{"rng.0", torch::full({1}, rank)}}, 2)) {
      files.push_back(file);
    }
  }
  write_metadata(dir.string(), files, {{"step", 7}});
  const CheckpointReader reader(dir.string());
  EXPECT_EQ(reader.state().at("step"), 7);
  EXPECT_EQ(reader.shape("w"), (std::vector<int64_t>{2, 8, 3}));
  EXPECT_TRUE(torch::equal(reader.read_full("w"), full));
  torch::Tensor box = torch::empty({1, 5, 2});
  reader.read("w", Box{{1, 2, 1}, {1, 5, 2}}, box);
  EXPECT_TRUE(torch::equal(box, full.narrow(0, 1, 1).narrow(1, 2, 5).narrow(2, 1, 2)));
  EXPECT_EQ(reader.rank_tensor(1, "rng.0").item<int64_t>(), 1);
  reader.verify_all();

  // Drop one piece: reading what it held names the gap.
  nlohmann::json metadata;
  std::ifstream(dir / "metadata.json") >> metadata;
  metadata["tensors"]["w"]["pieces"].erase(0);
  write_json(dir / "metadata.json", metadata);
  const CheckpointReader gappy(dir.string());
  const auto e = error_of<CheckpointError>([&] { gappy.read_full("w"); });
  expect_mentions(e, {"its pieces of 'w'", "cover"});
}

TEST(HfNames, ExpertStacksMapToEachFamilysTensors) {
  const auto names = [](Architecture arch, const std::string& name, std::vector<int64_t> shape, HfExperts experts) {
    std::vector<std::string> out;
    for (const HfPart& part : hf_parts(arch, name, shape, experts)) out.push_back(part.name);
    return out;
  };
  EXPECT_EQ(names(Architecture::kMixtral, "layers.1.mlp.experts.gate_up_proj", {2, 8, 3}, HfExperts::kPerExpert),
            (std::vector<std::string>{"model.layers.1.block_sparse_moe.experts.0.w1.weight",
                                      "model.layers.1.block_sparse_moe.experts.0.w3.weight",
                                      "model.layers.1.block_sparse_moe.experts.1.w1.weight",
                                      "model.layers.1.block_sparse_moe.experts.1.w3.weight"}));
  const std::vector<HfPart> up = hf_parts(Architecture::kQwen2Moe, "layers.0.mlp.experts.gate_up_proj", {2, 8, 3},
                                          HfExperts::kPerExpert);
  EXPECT_EQ(up[3].name, "model.layers.0.mlp.experts.1.up_proj.weight");
  EXPECT_EQ(up[3].box.offset, (std::vector<int64_t>{1, 4, 0}));
  EXPECT_EQ(up[3].shape, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(names(Architecture::kMixtral, "layers.0.mlp.gate.weight", {2, 3}, HfExperts::kPerExpert),
            (std::vector<std::string>{"model.layers.0.block_sparse_moe.gate.weight"}));
  EXPECT_EQ(names(Architecture::kMixtral, "layers.0.mlp.experts.down_proj", {2, 3, 4}, HfExperts::kFused),
            (std::vector<std::string>{"model.layers.0.mlp.experts.down_proj"}));
  EXPECT_EQ(names(Architecture::kLlama, "layers.2.mlp_norm.weight", {3}, HfExperts::kPerExpert),
            (std::vector<std::string>{"model.layers.2.post_attention_layernorm.weight"}));
  EXPECT_EQ(names(Architecture::kMarian, "decoder.layers.0.cross_attn.o_proj.bias", {3}, HfExperts::kPerExpert),
            (std::vector<std::string>{"model.decoder.layers.0.encoder_attn.out_proj.bias"}));
  EXPECT_EQ(hf_parts(Architecture::kMarian, "final_logits_bias", {5}, HfExperts::kPerExpert)[0].shape,
            (std::vector<int64_t>{1, 5}));
  EXPECT_TRUE(names(Architecture::kMarian, "embed_languages.weight", {2, 3}, HfExperts::kPerExpert).empty());
}

// config.json written for each reference family's config reads back as the same network.
TEST(HfConfig, WrittenConfigsReadBackAsTheSameNetwork) {
  for (const std::string model : {"llama-tiny", "mixtral-tiny", "qwen2moe-tiny", "qwen3moe-tiny", "marian-tiny"}) {
    SKIP_WITHOUT_REFERENCE(hf_dir(model));
    const Config config = hf_model_config(hf_dir(model));
    const Config back = hf_model_config_of(hf_config_json(config), model);
    for (const ModelDifference& d : model_differences(config, back)) ADD_FAILURE() << model << ": " << d.text();
  }
}

}  // namespace
}  // namespace foldtron
