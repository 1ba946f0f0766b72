// Hugging Face config.json -> Config (see hf_config.h). The key names and defaults follow
// transformers' LlamaConfig, MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig and MarianConfig; keys
// that change the network's shape are required (save_pretrained always writes them) rather than
// silently defaulted.
#include "checkpoint/hf_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"

namespace foldtron {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Typed access to one JSON object of config.json; `prefix` spells nested keys in messages
// ("rope_parameters.").
class Keys {
 public:
  Keys(const json& object, std::string file, std::string prefix = "")
      : object_(object), file_(std::move(file)), prefix_(std::move(prefix)) {}

  // Present and not null.
  bool has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }

  template <typename T>
  T required(const std::string& key) const {
    if (!has(key)) {
      throw CheckpointError(fmt::format("'{}': the required key '{}{}' is missing", file_, prefix_, key),
                            "a config.json written by transformers' save_pretrained has it; add it or export the "
                            "config again");
    }
    return convert<T>(key);
  }

  template <typename T>
  T optional(const std::string& key, T fallback) const {
    return has(key) ? convert<T>(key) : fallback;
  }

  const std::string& file() const { return file_; }

 private:
  template <typename T>
  T convert(const std::string& key) const {
    const json& v = object_.at(key);
    bool ok = false;
    const char* expected = "";
    if constexpr (std::is_same_v<T, int64_t>) {
      ok = v.is_number_integer(), expected = "an integer";
    } else if constexpr (std::is_same_v<T, double>) {
      ok = v.is_number(), expected = "a number";
    } else if constexpr (std::is_same_v<T, bool>) {
      ok = v.is_boolean(), expected = "true or false";
    } else if constexpr (std::is_same_v<T, std::string>) {
      ok = v.is_string(), expected = "a string";
    } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      ok = v.is_array() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); });
      expected = "a list of integers";
    } else if constexpr (std::is_same_v<T, json>) {
      ok = v.is_object(), expected = "an object";
    } else {
      static_assert(!sizeof(T), "unsupported config.json value type");
    }
    if (!ok) {
      throw CheckpointError(fmt::format("'{}': the key '{}{}' is {} ({}), expected {}", file_, prefix_, key,
                                        v.type_name(), v.dump(), expected),
                            "fix the value in config.json or export the config again with transformers");
    }
    return v.get<T>();
  }

  const json& object_;
  std::string file_;
  std::string prefix_;
};

CheckpointError unsupported(const std::string& file, const std::string& what, const std::string& hint) {
  return CheckpointError(fmt::format("'{}': {}", file, what), hint);
}

// Rotary base from rope_parameters (transformers >= 5), rope_scaling (older) or rope_theta;
// scaled variants (linear, dynamic, yarn, llama3, ...) are refused.
double read_rope_theta(const Keys& keys, const json& root) {
  double theta = keys.optional<double>("rope_theta", 10000.0);
  for (const char* section : {"rope_parameters", "rope_scaling"}) {
    if (!keys.has(section)) continue;
    keys.required<json>(section);  // throws unless an object
    const json& object = root.at(section);
    const Keys sub(object, keys.file(), std::string(section) + ".");
    std::string type = sub.optional<std::string>("rope_type", sub.optional<std::string>("type", ""));
    if (type.empty() && std::string(section) == "rope_scaling") type = "(unnamed)";
    if (!type.empty() && type != "default") {
      throw unsupported(keys.file(), fmt::format("{}.rope_type '{}' (scaled rotary embeddings) is not supported", section, type),
                        "foldtron implements plain rotary embeddings only (rope_type: default); use a model "
                        "without rope scaling");
    }
    if (object.contains("rope_theta")) theta = sub.required<double>("rope_theta");
  }
  return theta;
}

// Marian (MarianMTModel): a post-norm encoder-decoder with biases everywhere, LayerNorm, fixed
// sinusoidal positions, scaled embeddings shared by the encoder, the decoder and the output
// layer, and final_logits_bias. Encoder and decoder must have the same width, heads and FFN.
Config marian_config(const Keys& keys, const json& root) {
  const std::string& file = keys.file();
  Config config;
  ModelConfig& m = config.model;
  m.architecture = Architecture::kMarian;
  m.hidden_size = keys.required<int64_t>("d_model");
  m.encoder_layers = keys.required<int64_t>("encoder_layers");
  m.num_layers = keys.required<int64_t>("decoder_layers");
  m.num_attention_heads = keys.required<int64_t>("encoder_attention_heads");
  m.ffn_hidden_size = keys.required<int64_t>("encoder_ffn_dim");
  for (const auto& [decoder_key, encoder_value] :
       std::vector<std::pair<std::string, int64_t>>{{"decoder_attention_heads", m.num_attention_heads},
                                                    {"decoder_ffn_dim", m.ffn_hidden_size}}) {
    const int64_t value = keys.optional<int64_t>(decoder_key, encoder_value);
    if (value != encoder_value) {
      throw unsupported(file, fmt::format("{} {} differs from the encoder's {}", decoder_key, value, encoder_value),
                        "foldtron's encoder-decoder uses one width, head count and FFN size for both stacks");
    }
  }
  m.num_query_groups = m.num_attention_heads;
  m.head_dim = 0;
  m.vocab_size = keys.required<int64_t>("vocab_size");
  const int64_t decoder_vocab = keys.optional<int64_t>("decoder_vocab_size", m.vocab_size);
  if (decoder_vocab != m.vocab_size || !keys.optional<bool>("share_encoder_decoder_embeddings", true)) {
    throw unsupported(file, "separate source and target vocabularies are not supported",
                      "foldtron's encoder-decoder shares one vocabulary (share_encoder_decoder_embeddings: true)");
  }
  m.max_position_embeddings = keys.required<int64_t>("max_position_embeddings");
  const std::string act = keys.optional<std::string>("activation_function", "swish");
  if (act == "swish" || act == "silu") {
    m.activation = Activation::kSilu;
  } else if (act == "gelu") {
    m.activation = Activation::kGelu;
  } else if (act == "relu") {
    m.activation = Activation::kRelu;
  } else {
    throw unsupported(file, fmt::format("activation_function '{}' is not supported", act),
                      "foldtron's encoder-decoder takes swish/silu, gelu or relu");
  }
  if (keys.optional<bool>("normalize_before", false)) {
    throw unsupported(file, "normalize_before: true is not Marian's post-norm layout",
                      "import a Marian checkpoint (post-norm)");
  }
  m.normalization = Normalization::kLayerNorm;
  m.norm_eps = 1e-5;  // torch.nn.LayerNorm's default, which Marian uses
  m.norm_position = NormPosition::kPost;
  m.position_embedding = PositionKind::kSinusoidal;
  m.linear_bias = true;
  m.qkv_bias = true;
  m.scale_embeddings = keys.optional<bool>("scale_embedding", false);
  m.final_logits_bias = true;
  m.tie_embeddings = keys.optional<bool>("tie_word_embeddings", true);
  m.pad_token_id = keys.optional<int64_t>("pad_token_id", -1);
  m.decoder_start_token_id = keys.optional<int64_t>("decoder_start_token_id", m.pad_token_id);
  m.hidden_dropout = keys.optional<double>("dropout", 0.0);
  m.attention_dropout = keys.optional<double>("attention_dropout", 0.0);
  m.init_std = keys.optional<double>("init_std", m.init_std);
  m.params_dtype = DType::kFloat32;
  (void)root;
  return config;
}

// config.json as a JSON object; CheckpointError naming the file otherwise.
json read_config_json(const std::string& file) {
  std::error_code error;
  if (!fs::is_regular_file(file, error)) {
    throw CheckpointError(fmt::format("the model config '{}' does not exist", file),
                          "pass a Hugging Face model directory (config.json plus safetensors weights)");
  }
  json root;
  try {
    std::ifstream in(file);
    root = json::parse(in);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    throw CheckpointError(fmt::format("'{}' is not valid JSON ({})", file, e.what()),
                          "copy or download config.json again");
  }
  if (!root.is_object()) {
    throw CheckpointError(fmt::format("'{}' holds JSON {}, not an object", file, root.type_name()),
                          "copy or download config.json again");
  }
  return root;
}

// The decoder-only transformer every family shares (attention, norms, rotary, the SwiGLU MLP).
void read_decoder_only(const Keys& keys, const json& root, ModelConfig& m) {
  const std::string& file = keys.file();
  m.hidden_size = keys.required<int64_t>("hidden_size");
  m.num_layers = keys.required<int64_t>("num_hidden_layers");
  m.num_attention_heads = keys.required<int64_t>("num_attention_heads");
  m.num_query_groups = keys.optional<int64_t>("num_key_value_heads", m.num_attention_heads);
  m.head_dim = keys.optional<int64_t>("head_dim", 0);
  m.ffn_hidden_size = keys.required<int64_t>("intermediate_size");
  m.vocab_size = keys.required<int64_t>("vocab_size");
  m.max_position_embeddings = keys.required<int64_t>("max_position_embeddings");
  m.norm_eps = keys.required<double>("rms_norm_eps");
  m.normalization = Normalization::kRmsNorm;
  m.tie_embeddings = keys.optional<bool>("tie_word_embeddings", false);
  // nn.Embedding(padding_idx=pad_token_id): that row gets no gradient from lookups.
  m.pad_token_id = keys.optional<int64_t>("pad_token_id", -1);
  m.rope_theta = read_rope_theta(keys, root);
  m.params_dtype = DType::kFloat32;
  m.init_std = keys.optional<double>("initializer_range", m.init_std);
  m.attention_dropout = keys.optional<double>("attention_dropout", 0.0);

  const std::string act = keys.optional<std::string>("hidden_act", "silu");
  if (act != "silu" && act != "swish") {  // transformers maps both to SiLU
    throw unsupported(file, fmt::format("hidden_act '{}' is not supported", act),
                      "foldtron's gated MLP is SwiGLU (hidden_act: silu); other activations cannot be imported");
  }
  m.activation = Activation::kSwiglu;

  if (keys.optional<bool>("mlp_bias", false)) {
    throw unsupported(file, "mlp_bias: true (biases on the MLP projections) is not supported",
                      "foldtron's MLP has no biases; import a model with mlp_bias: false");
  }
}

// Llama: dense.
void read_llama(const Keys& keys, Config& config) {
  const std::string& file = keys.file();
  ModelConfig& m = config.model;
  MoEConfig& moe = config.moe;
  // LlamaAttention's attention_bias puts a bias on o_proj as well as q/k/v; foldtron's output
  // projection has none, so only the default (false) can be reproduced.
  if (keys.optional<bool>("attention_bias", false)) {
    throw unsupported(file, "attention_bias: true (biases on q/k/v and o_proj) is not supported",
                      "foldtron has q/k/v biases (qkv_bias) but no output-projection bias; import a model with "
                      "attention_bias: false");
  }
  m.qkv_bias = false;
  moe.num_experts = 0;
}

// Mixtral: softmax over all experts, top-k renormalized, every layer sparse.
void read_mixtral(const Keys& keys, const json& root, Config& config) {
  const std::string& file = keys.file();
  ModelConfig& m = config.model;
  MoEConfig& moe = config.moe;
  if (keys.has("sliding_window")) {
    throw unsupported(file,
                      fmt::format("sliding_window {} (sliding-window attention) is not supported",
                                  root.at("sliding_window").dump()),
                      "foldtron attends over the whole sequence; set sliding_window to null only if every "
                      "sequence is shorter than the window");
  }
  m.qkv_bias = false;
  moe.num_experts = keys.required<int64_t>("num_local_experts");
  moe.topk = keys.required<int64_t>("num_experts_per_tok");
  moe.expert_ffn_hidden_size = m.ffn_hidden_size;
  moe.shared_expert_ffn_hidden_size = 0;
  moe.shared_expert_gate = false;
  moe.router_score = RouterScore::kSoftmax;
  moe.router_pre_softmax = true;  // softmax over all experts, top-k, renormalize
  moe.normalize_topk = true;
  moe.layer_step = 1;
  moe.dense_layers.clear();
  moe.aux_loss_coeff = keys.optional<double>("router_aux_loss_coef", 0.001);
}

// Qwen2-MoE and Qwen3-MoE.
void read_qwen_moe(const Keys& keys, Config& config) {
  const std::string& file = keys.file();
  ModelConfig& m = config.model;
  MoEConfig& moe = config.moe;
  // Qwen2-MoE: q/k/v always carry biases (transformers 5 spells it qkv_bias), o_proj none.
  // Qwen3-MoE: no biases (attention_bias would put one on o_proj too), each query and key head
  // RMS-normalized before rotary, no shared expert.
  if (keys.optional<bool>("use_sliding_window", false)) {
    throw unsupported(file, "use_sliding_window: true (sliding-window attention) is not supported",
                      "foldtron attends over the whole sequence; import a model with use_sliding_window: false");
  }
  const bool qwen3 = m.architecture == Architecture::kQwen3Moe;
  if (qwen3) {
    if (keys.optional<bool>("attention_bias", false)) {
      throw unsupported(file, "attention_bias: true (biases on q/k/v and o_proj) is not supported for qwen3_moe",
                        "import a model with attention_bias: false");
    }
    m.qkv_bias = false;
    m.qk_norm = true;
  } else {
    m.qkv_bias = keys.optional<bool>("qkv_bias", true);
  }
  moe.num_experts = keys.has("num_experts") ? keys.required<int64_t>("num_experts")
                                            : keys.required<int64_t>("num_local_experts");
  if (moe.num_experts == 0) return;  // transformers builds every layer dense
  moe.topk = keys.required<int64_t>("num_experts_per_tok");
  moe.expert_ffn_hidden_size = keys.required<int64_t>("moe_intermediate_size");
  moe.shared_expert_ffn_hidden_size = qwen3 ? 0 : keys.required<int64_t>("shared_expert_intermediate_size");
  moe.shared_expert_gate = moe.shared_expert_ffn_hidden_size > 0;
  moe.router_score = RouterScore::kSoftmax;
  moe.router_pre_softmax = true;
  moe.normalize_topk = keys.optional<bool>("norm_topk_prob", qwen3);
  moe.aux_loss_coeff = keys.optional<double>("router_aux_loss_coef", 0.001);
  // transformers makes layer i sparse when i is not in mlp_only_layers and (i + 1) % step == 0;
  // foldtron's layer_step counts from layer 0 (i % step == 0), so spell the dense layers out
  // (one entry per layer: the count is bounded first, so a hostile file cannot make it loop).
  constexpr int64_t kMaxLayers = 100000;
  if (m.num_layers < 1 || m.num_layers > kMaxLayers) {
    throw unsupported(file, fmt::format("num_hidden_layers {} is not a layer count from 1 to {}", m.num_layers, kMaxLayers),
                      "check num_hidden_layers in config.json");
  }
  const int64_t step = keys.optional<int64_t>("decoder_sparse_step", 1);
  if (step < 1) {
    throw unsupported(file, fmt::format("decoder_sparse_step {} must be at least 1", step),
                      "set decoder_sparse_step to 1 (every layer has experts) or more");
  }
  const std::vector<int64_t> mlp_only = keys.optional<std::vector<int64_t>>("mlp_only_layers", {});
  const std::set<int64_t> listed(mlp_only.begin(), mlp_only.end());
  moe.layer_step = 1;
  moe.dense_layers.clear();
  for (int64_t layer = 0; layer < m.num_layers; ++layer) {
    if (listed.count(layer) > 0 || (layer + 1) % step != 0) moe.dense_layers.push_back(layer);
  }
}

}  // namespace

const std::vector<std::string>& hf_supported_model_types() {
  static const std::vector<std::string> types = {"llama", "mixtral", "qwen2_moe", "qwen3_moe", "marian"};
  return types;
}

Config hf_model_config(const std::string& dir) {
  const std::string file = (fs::path(dir) / "config.json").string();
  return hf_model_config_of(read_config_json(file), file);
}

Config hf_model_config_of(const json& root, const std::string& file) {
  const Keys keys(root, file);
  const std::string type = keys.required<std::string>("model_type");
  if (type == "marian") return marian_config(keys, root);
  Config config;
  if (type == "llama") {
    config.model.architecture = Architecture::kLlama;
  } else if (type == "mixtral") {
    config.model.architecture = Architecture::kMixtral;
  } else if (type == "qwen2_moe") {
    config.model.architecture = Architecture::kQwen2Moe;
  } else if (type == "qwen3_moe") {
    config.model.architecture = Architecture::kQwen3Moe;
  } else {
    throw unsupported(file,
                      fmt::format("model_type '{}' is not supported (supported: {})", type,
                                  fmt::join(hf_supported_model_types(), ", ")),
                      "import a checkpoint of one of those families");
  }
  read_decoder_only(keys, root, config.model);
  if (type == "llama") {
    read_llama(keys, config);
  } else if (type == "mixtral") {
    read_mixtral(keys, root, config);
  } else {
    read_qwen_moe(keys, config);
  }
  return config;
}

json hf_config_json(const Config& config) {
  const ModelConfig& m = config.model;
  const MoEConfig& moe = config.moe;
  json out;
  const char* dtype = m.params_dtype == DType::kBfloat16 ? "bfloat16" : "float32";
  if (m.architecture == Architecture::kMarian) {
    out = {{"architectures", {"MarianMTModel"}}, {"model_type", "marian"}, {"d_model", m.hidden_size},
           {"encoder_layers", m.encoder_layers}, {"decoder_layers", m.num_layers},
           {"encoder_attention_heads", m.num_attention_heads}, {"decoder_attention_heads", m.num_attention_heads},
           {"encoder_ffn_dim", m.ffn_hidden_size}, {"decoder_ffn_dim", m.ffn_hidden_size},
           {"vocab_size", m.vocab_size}, {"decoder_vocab_size", m.vocab_size},
           {"share_encoder_decoder_embeddings", true}, {"max_position_embeddings", m.max_position_embeddings},
           {"activation_function", enum_name(m.activation)}, {"normalize_before", m.norm_position == NormPosition::kPre},
           {"scale_embedding", m.scale_embeddings}, {"tie_word_embeddings", m.tie_embeddings},
           {"dropout", m.hidden_dropout}, {"attention_dropout", m.attention_dropout}, {"init_std", m.init_std},
           {"is_encoder_decoder", true}, {"torch_dtype", dtype}};
    if (m.pad_token_id >= 0) out["pad_token_id"] = m.pad_token_id;
    if (m.decoder_start_token_id >= 0) out["decoder_start_token_id"] = m.decoder_start_token_id;
    return out;
  }
  static const std::map<Architecture, std::pair<const char*, const char*>> kinds{
      {Architecture::kLlama, {"LlamaForCausalLM", "llama"}},
      {Architecture::kMixtral, {"MixtralForCausalLM", "mixtral"}},
      {Architecture::kQwen2Moe, {"Qwen2MoeForCausalLM", "qwen2_moe"}},
      {Architecture::kQwen3Moe, {"Qwen3MoeForCausalLM", "qwen3_moe"}}};
  const auto& [cls, type] = kinds.at(m.architecture);
  out = {{"architectures", {cls}}, {"model_type", type}, {"hidden_size", m.hidden_size},
         {"num_hidden_layers", m.num_layers}, {"num_attention_heads", m.num_attention_heads},
         {"num_key_value_heads", m.num_query_groups}, {"head_dim", m.kv_channels()},
         {"intermediate_size", m.ffn_hidden_size}, {"vocab_size", m.vocab_size},
         {"max_position_embeddings", m.max_position_embeddings}, {"rms_norm_eps", m.norm_eps},
         {"rope_theta", m.rope_theta}, {"hidden_act", "silu"}, {"tie_word_embeddings", m.tie_embeddings},
         {"initializer_range", m.init_std}, {"attention_dropout", m.attention_dropout},
         {"attention_bias", false}, {"torch_dtype", dtype}};
  if (m.pad_token_id >= 0) out["pad_token_id"] = m.pad_token_id;
  switch (m.architecture) {
    case Architecture::kLlama:
      out["mlp_bias"] = false;
      break;
    case Architecture::kMixtral:
      // Mixtral's experts are intermediate_size wide (every layer has experts).
      out["intermediate_size"] = moe.expert_ffn(m.ffn_hidden_size);
      out["num_local_experts"] = moe.num_experts;
      out["num_experts_per_tok"] = moe.topk;
      out["router_aux_loss_coef"] = moe.aux_loss_coeff;
      out["sliding_window"] = nullptr;
      break;
    default: {  // Qwen2-MoE, Qwen3-MoE
      const bool qwen3 = m.architecture == Architecture::kQwen3Moe;
      out["num_experts"] = moe.num_experts;
      out["num_experts_per_tok"] = moe.topk;
      out["moe_intermediate_size"] = moe.expert_ffn(m.ffn_hidden_size);
      if (!qwen3) out["shared_expert_intermediate_size"] = moe.shared_expert_ffn_hidden_size;
      if (!qwen3 && !m.qkv_bias) out["qkv_bias"] = false;  // transformers 4 always has them
      out["norm_topk_prob"] = moe.normalize_topk;
      out["router_aux_loss_coef"] = moe.aux_loss_coeff;
      out["decoder_sparse_step"] = 1;
      json dense = json::array();
      for (int64_t layer = 0; layer < m.num_layers; ++layer) {
        if (!moe.is_moe_layer(layer)) dense.push_back(layer);
      }
      out["mlp_only_layers"] = dense;
      out["use_sliding_window"] = false;
      break;
    }
  }
  return out;
}

}  // namespace foldtron
