// Validation of a whole Config (see validate.h). Each check appends a ConfigProblem; nothing
// throws until every section has been checked.
#include "config/validate.h"

#include <fmt/format.h>

#include "config/layout.h"

namespace foldtron {
namespace {

class Checker {
 public:
  explicit Checker(std::vector<ConfigProblem>& problems) : problems_(problems) {}

  void add(std::string field, std::string message, std::string hint) {
    problems_.push_back({std::move(field), std::move(message), std::move(hint)});
  }
  void positive(const std::string& field, int64_t value) {
    if (value < 1) add(field, fmt::format("must be at least 1, got {}", value), "use a positive size");
  }
  void non_negative(const std::string& field, double value) {
    if (value < 0) add(field, fmt::format("must not be negative, got {}", value), "use 0 or a positive value");
  }
  void positive_real(const std::string& field, double value) {
    if (!(value > 0)) add(field, fmt::format("must be greater than 0, got {}", value), "use a positive value");
  }
  void probability(const std::string& field, double value) {
    if (!(value >= 0 && value < 1)) add(field, fmt::format("must be in [0, 1), got {}", value), "use e.g. 0.1");
  }
  // `field` (value) must be divisible by `by_name` (by); both are named in the message.
  void divisible(const std::string& field, int64_t value, const std::string& by_name, int64_t by,
                 const std::string& hint) {
    if (by > 0 && value % by != 0) {
      add(field, fmt::format("{} ({}) must be divisible by {} ({})", field, value, by_name, by), hint);
    }
  }

 private:
  std::vector<ConfigProblem>& problems_;
};

bool has_dense_layer(const Config& c) {
  if (!c.moe.enabled()) return true;
  if (!c.moe.dense_layers.empty()) return true;
  return c.moe.layer_step > 1;
}

void check_model(const Config& c, Checker& check) {
  const ModelConfig& m = c.model;
  check.positive("model.num_layers", m.num_layers);
  if (m.pad_token_id >= m.vocab_size || m.decoder_start_token_id >= m.vocab_size) {
    check.add(m.pad_token_id >= m.vocab_size ? "model.pad_token_id" : "model.decoder_start_token_id",
              fmt::format("token id {} is outside the vocabulary (vocab_size {})",
                          std::max(m.pad_token_id, m.decoder_start_token_id), m.vocab_size),
              "use an id below vocab_size, or -1 for none");
  }
  check.positive("model.hidden_size", m.hidden_size);
  check.positive("model.num_attention_heads", m.num_attention_heads);
  check.positive("model.num_query_groups", m.num_query_groups);
  check.positive("model.ffn_hidden_size", m.ffn_hidden_size);
  check.positive("model.vocab_size", m.vocab_size);
  check.positive("model.max_position_embeddings", m.max_position_embeddings);
  check.non_negative("model.head_dim", static_cast<double>(m.head_dim));
  check.positive_real("model.rope_theta", m.rope_theta);
  check.positive_real("model.norm_eps", m.norm_eps);
  check.positive_real("model.init_std", m.init_std);
  check.probability("model.hidden_dropout", m.hidden_dropout);
  check.positive("model.recompute_num_layers", m.recompute_num_layers);
  if (m.recompute_moe_act() && !c.moe.grouped_experts && c.moe.enabled()) {
    check.add("model.recompute", "moe_act recomputation is built for the grouped experts only",
              "set moe.grouped_experts: true, or model.recompute: core_attn or full");
  }
  check.probability("model.attention_dropout", m.attention_dropout);
  if (m.num_attention_heads < 1 || m.num_query_groups < 1) return;
  if (m.head_dim == 0) {
    check.divisible("model.hidden_size", m.hidden_size, "model.num_attention_heads", m.num_attention_heads,
                    "set model.head_dim explicitly or choose hidden_size = heads * head_dim");
  }
  check.divisible("model.num_attention_heads", m.num_attention_heads, "model.num_query_groups", m.num_query_groups,
                  "each key/value head serves a whole number of query heads");
  const bool moe_architecture = m.architecture == Architecture::kMixtral || m.architecture == Architecture::kQwen2Moe ||
                                m.architecture == Architecture::kQwen3Moe;
  if (moe_architecture && !c.moe.enabled()) {
    check.add("model.architecture", fmt::format("'{}' is a Mixture-of-Experts family but moe.num_experts is 0",
                                                enum_name(m.architecture)),
              "set moe.num_experts, or use architecture: llama for a dense model");
  }
  if (m.architecture == Architecture::kLlama && c.moe.enabled()) {
    check.add("model.architecture", fmt::format("'llama' is dense but moe.num_experts is {}", c.moe.num_experts),
              "use architecture: mixtral, qwen2_moe or qwen3_moe for an MoE model, or set moe.num_experts: 0");
  }
  check.non_negative("model.encoder_layers", static_cast<double>(m.encoder_layers));
  check.non_negative("model.num_languages", static_cast<double>(m.num_languages));
  if (m.encoder_decoder()) {
    if (m.encoder_layers < 1) {
      check.add("model.encoder_layers", fmt::format("'{}' is an encoder-decoder but encoder_layers is {}",
                                                    enum_name(m.architecture), m.encoder_layers),
                "give the encoder at least one layer");
    }
    return;
  }
  // Decoder-only models: pre-norm, rotary, plain token embeddings. Keys of the encoder-decoder
  // would do nothing here, so they are refused.
  const std::string family = enum_name(m.architecture);
  const auto encoder_decoder_only = [&](const std::string& key, bool set, const std::string& value) {
    if (!set) return;
    check.add("model." + key, fmt::format("{} applies to encoder-decoder models, not to '{}'", value, family),
              fmt::format("remove model.{} or use architecture: marian", key));
  };
  encoder_decoder_only("encoder_layers", m.encoder_layers != 0, fmt::format("encoder_layers ({})", m.encoder_layers));
  encoder_decoder_only("norm_position", m.norm_position != NormPosition::kPre, "norm_position: post");
  encoder_decoder_only("position_embedding", m.position_embedding != PositionKind::kRotary,
                       "position_embedding: " + enum_name(m.position_embedding));
  encoder_decoder_only("scale_embeddings", m.scale_embeddings, "scale_embeddings");
  encoder_decoder_only("embedding_norm", m.embedding_norm, "embedding_norm");
  encoder_decoder_only("num_languages", m.num_languages != 0, "num_languages");
  encoder_decoder_only("final_logits_bias", m.final_logits_bias, "final_logits_bias");
  encoder_decoder_only("decoder_start_token_id", m.decoder_start_token_id >= 0, "decoder_start_token_id");
}

void check_moe(const Config& c, Checker& check) {
  const MoEConfig& moe = c.moe;
  check.non_negative("moe.num_experts", static_cast<double>(moe.num_experts));
  if (!moe.enabled()) {
    if (c.parallel.ep > 1) {
      check.add("parallel.ep", fmt::format("ep ({}) > 1 needs an MoE model, but moe.num_experts is 0", c.parallel.ep),
                "set parallel.ep: 1 for a dense model");
    }
    return;
  }
  check.positive("moe.topk", moe.topk);
  if (moe.topk > moe.num_experts) {
    check.add("moe.topk", fmt::format("topk ({}) must not exceed moe.num_experts ({})", moe.topk, moe.num_experts),
              "route each token to at most num_experts experts");
  }
  check.non_negative("moe.expert_ffn_hidden_size", static_cast<double>(moe.expert_ffn_hidden_size));
  check.non_negative("moe.shared_expert_ffn_hidden_size", static_cast<double>(moe.shared_expert_ffn_hidden_size));
  check.positive("moe.layer_step", moe.layer_step);
  for (int64_t layer : moe.dense_layers) {
    if (layer < 0 || layer >= c.model.num_layers) {
      check.add("moe.dense_layers", fmt::format("layer {} is outside 0..{}", layer, c.model.num_layers - 1),
                "list layer indices counted from 0");
    }
  }
  check.non_negative("moe.aux_loss_coeff", moe.aux_loss_coeff);
  check.non_negative("moe.z_loss_coeff", moe.z_loss_coeff);
  check.positive_real("moe.router_scaling_factor", moe.router_scaling_factor);
  check.non_negative("moe.capacity_factor", moe.capacity_factor);
  if (moe.capacity_factor > 0 && moe.load_balancing == LoadBalancing::kSinkhorn) {
    check.add("moe.capacity_factor",
              fmt::format("capacity_factor ({}) needs load_balancing aux_loss, seq_aux_loss or none, not sinkhorn",
                          moe.capacity_factor),
              "use load_balancing: aux_loss with token dropping, or capacity_factor: 0 (dropless) with sinkhorn");
  }
  if (moe.pad_to_capacity && moe.capacity_factor <= 0) {
    check.add("moe.pad_to_capacity", "pad_to_capacity needs a capacity, but moe.capacity_factor is 0 (dropless)",
              "set moe.capacity_factor (e.g. 1.0) or pad_to_capacity: false");
  }
  if (moe.router_num_groups > 0) {
    check.divisible("moe.num_experts", moe.num_experts, "moe.router_num_groups", moe.router_num_groups,
                    "experts are split into equal groups for group-limited routing");
    if (moe.router_group_topk < 1 || moe.router_group_topk > moe.router_num_groups) {
      check.add("moe.router_group_topk",
                fmt::format("must be in 1..router_num_groups ({}), got {}", moe.router_num_groups, moe.router_group_topk),
                "choose how many groups each token may select from");
    } else if (moe.num_experts % moe.router_num_groups == 0 &&
               moe.topk > moe.router_group_topk * (moe.num_experts / moe.router_num_groups)) {
      check.add("moe.topk", fmt::format("topk ({}) exceeds the experts in {} selected groups of {}", moe.topk,
                                        moe.router_group_topk, moe.num_experts / moe.router_num_groups),
                "raise router_group_topk or lower topk");
    }
  }
  const ParallelConfig& p = c.parallel;
  if (p.ep >= 1) {
    check.divisible("moe.num_experts", moe.num_experts, "parallel.ep", p.ep,
                    "each expert-parallel rank holds num_experts/ep whole experts");
  }
  const int64_t expert_ffn = moe.expert_ffn_hidden_size > 0 ? moe.expert_ffn_hidden_size : c.model.ffn_hidden_size;
  if (p.expert_tp() >= 1) {
    check.divisible("moe.expert_ffn_hidden_size", expert_ffn, "parallel.etp", p.expert_tp(),
                    "the expert FFN dimension is split over etp");
  }
  if (p.tp >= 1 && moe.shared_expert_ffn_hidden_size > 0) {
    check.divisible("moe.shared_expert_ffn_hidden_size", moe.shared_expert_ffn_hidden_size, "parallel.tp", p.tp,
                    "the shared expert is split over tp like a dense MLP");
  }
}

void check_parallel(const Config& c, int64_t world, Checker& check, std::vector<ConfigProblem>& problems) {
  const ParallelConfig& p = c.parallel;
  const ModelConfig& m = c.model;
  check.positive("parallel.vpp", p.vpp);
  check.non_negative("parallel.etp", static_cast<double>(p.etp));
  check.positive_real("parallel.timeout_s", p.timeout_s);
  check.positive_real("parallel.grad_bucket_mb", p.grad_bucket_mb);
  check.non_negative("parallel.devices_per_node", static_cast<double>(p.devices_per_node));
  ParallelLayout layout =
      layout_of(p, world > 0 ? world : saturated_product(saturated_product(p.tp, p.cp, p.pp), p.ep, p.expert_tp()));
  const size_t before = problems.size();
  if (world > 0) {
    check_layout(layout, problems);
  } else {
    // Without a world size only the sizes and the order can be checked.
    layout.world = 1;
    std::vector<ConfigProblem> structural;
    check_layout(layout, structural);
    for (ConfigProblem& problem : structural) {
      if (problem.field != "parallel") problems.push_back(std::move(problem));
    }
  }
  if (problems.size() != before || p.tp < 1 || p.cp < 1 || p.pp < 1 || p.ep < 1 || p.vpp < 1) return;
  if (world > 0) check_layout_trainable(layout, problems);

  check.divisible("model.num_attention_heads", m.num_attention_heads, "parallel.tp", p.tp,
                  "each tensor-parallel rank holds num_attention_heads/tp whole heads");
  check.divisible("model.num_query_groups", m.num_query_groups, "parallel.tp", p.tp,
                  "each tensor-parallel rank holds num_query_groups/tp whole key/value heads");
  if (has_dense_layer(c)) {
    check.divisible("model.ffn_hidden_size", m.ffn_hidden_size, "parallel.tp", p.tp,
                    "the dense MLP is split over tp");
  }
  if (p.sequence_parallel) {
    check.divisible("train.seq_length", c.train.seq_length, "parallel.tp", p.tp,
                    "sequence parallelism splits the sequence over tp");
  }
  if (p.cp > 1 && m.encoder_decoder()) {
    check.add("parallel.cp", fmt::format("cp ({}) > 1 runs decoder-only models; '{}' is an encoder-decoder", p.cp,
                                         enum_name(m.architecture)),
              "set parallel.cp: 1 (encoder-decoder models split their work over tp, ep, dp and pp)");
  }
  if (p.cp > 1) {
    check.divisible("train.seq_length", c.train.seq_length, "2*parallel.cp", saturated_product(2, p.cp),
                    "context parallelism splits each sequence into 2*cp load-balanced chunks");
    if (p.cp_comm_type == CpCommType::kAllToAll) {
      check.divisible("model.num_attention_heads", m.num_attention_heads, "tp*cp", saturated_product(p.tp, p.cp),
                      "a2a (Ulysses) context parallelism scatters heads over tp*cp; use allgather otherwise");
      check.divisible("model.num_query_groups", m.num_query_groups, "tp*cp", saturated_product(p.tp, p.cp),
                      "a2a (Ulysses) context parallelism scatters key/value heads over tp*cp; use allgather otherwise");
    }
    if (p.cp_comm_type == CpCommType::kP2P && m.attention_dropout > 0) {
      check.add("model.attention_dropout", "p2p (ring) context-parallel attention has no attention dropout",
                "set model.attention_dropout: 0, or parallel.cp_comm_type to allgather or a2a");
    }
    if (p.sequence_parallel) {
      check.divisible("train.seq_length", c.train.seq_length, "tp*cp", saturated_product(p.tp, p.cp),
                      "with context and sequence parallelism each rank's s/cp tokens split over tp");
    }
  }
  if (p.vpp > 1 && p.pp == 1) {
    check.add("parallel.vpp", fmt::format("vpp ({}) > 1 needs pipeline parallelism, but pp is 1", p.vpp),
              "set parallel.pp > 1 or parallel.vpp: 1");
  }
  const int64_t stages = p.pp * p.vpp, layers = m.total_layers();
  const std::string layers_name = m.encoder_decoder() ? "encoder_layers + num_layers" : "num_layers";
  if (p.pipeline_layers.empty()) {
    if (m.num_layers >= 1 && layers % stages != 0) {
      check.add("model.num_layers",
                fmt::format("{} ({}) must be divisible by pp*vpp = {} (pp {}, vpp {})", layers_name, layers, stages,
                            p.pp, p.vpp),
                "change the layers, pp or vpp, or give parallel.pipeline_layers explicitly");
    }
  } else {
    int64_t total = 0;
    bool all_positive = true;
    for (int64_t n : p.pipeline_layers) {
      total += n;
      all_positive = all_positive && n >= 1;
    }
    if (static_cast<int64_t>(p.pipeline_layers.size()) != stages || total != layers || !all_positive) {
      check.add("parallel.pipeline_layers",
                fmt::format("must list {} positive layer counts (pp*vpp) summing to {} ({}); got {} entries "
                            "summing to {}",
                            stages, layers_name, layers, p.pipeline_layers.size(), total),
                "e.g. pp 2 with 6 layers: [3, 3]; or leave it empty for an even split");
    }
  }
  if (world > 0 && c.train.micro_batch_size >= 1 && layout.attention_ranks() <= world &&
      world % layout.attention_ranks() == 0) {
    const int64_t per_step = c.train.micro_batch_size * layout.dp();
    check.divisible("train.global_batch_size", c.train.global_batch_size, "micro_batch_size*dp", per_step,
                    fmt::format("global batch = micro_batch_size ({}) x micro-batches x dp ({})",
                                c.train.micro_batch_size, layout.dp()));
    if (p.vpp > 1 && p.pp > 1 && per_step > 0 && c.train.global_batch_size % per_step == 0) {
      check.divisible("train.global_batch_size", c.train.global_batch_size, "micro_batch_size*dp*pp",
                      per_step * p.pp,
                      fmt::format("the interleaved pipeline schedule (vpp {}) runs micro-batches in groups of pp ({}); "
                                  "the micro-batches per step ({}) must be a multiple of it: raise global_batch_size or "
                                  "set parallel.vpp: 1",
                                  p.vpp, p.pp, c.train.global_batch_size / per_step));
    }
  }
}

void check_train(const Config& c, Checker& check) {
  const TrainConfig& t = c.train;
  check.non_negative("train.train_iters", static_cast<double>(t.train_iters));
  check.positive("train.global_batch_size", t.global_batch_size);
  check.positive("train.micro_batch_size", t.micro_batch_size);
  check.positive("train.seq_length", t.seq_length);
  check.non_negative("train.lr", t.lr);
  check.non_negative("train.min_lr", t.min_lr);
  if (t.min_lr > t.lr) {
    check.add("train.min_lr", fmt::format("min_lr ({}) must not exceed lr ({})", t.min_lr, t.lr),
              "the schedule decays from lr down to min_lr");
  }
  check.non_negative("train.lr_warmup_iters", static_cast<double>(t.lr_warmup_iters));
  check.non_negative("train.lr_decay_iters", static_cast<double>(t.lr_decay_iters));
  check.non_negative("train.weight_decay", t.weight_decay);
  check.probability("train.adam_beta1", t.adam_beta1);
  check.probability("train.adam_beta2", t.adam_beta2);
  check.positive_real("train.adam_eps", t.adam_eps);
  check.non_negative("train.clip_grad", t.clip_grad);
  check.positive("train.max_bad_steps", t.max_bad_steps);
  if (t.main_grads_dtype == DType::kBfloat16 && c.model.params_dtype != DType::kBfloat16) {
    check.add("train.main_grads_dtype",
              "bf16 main gradients are for bf16 parameters, but model.params_dtype is fp32 (fp32 parameters keep "
              "fp32 gradients)",
              "set model.params_dtype: bf16, or train.main_grads_dtype: fp32");
  }
  if (t.seq_length > c.model.max_position_embeddings) {
    check.add("train.seq_length",
              fmt::format("seq_length ({}) exceeds model.max_position_embeddings ({})", t.seq_length,
                          c.model.max_position_embeddings),
              "raise model.max_position_embeddings or shorten the sequences");
  }
}

void check_data(const Config& c, Checker& check) {
  const DataConfig& d = c.data;
  if (d.tokenizer == Tokenizer::kSentencePiece && d.tokenizer_model.empty() && !d.mock) {
    check.add("data.tokenizer_model", "empty, but data.tokenizer is sentencepiece",
              "name the .model file the data was preprocessed with (foldtron tokenizer train writes one)");
  }
  if (d.tokenizer == Tokenizer::kByte && !d.tokenizer_model.empty()) {
    check.add("data.tokenizer_model", fmt::format("'{}' is set, but data.tokenizer is byte", d.tokenizer_model),
              "set data.tokenizer: sentencepiece to use the model, or remove data.tokenizer_model");
  }
  if (d.tokenizer == Tokenizer::kByte && c.model.vocab_size < 256) {
    check.add("model.vocab_size", fmt::format("the byte tokenizer needs vocab_size >= 256, got {}", c.model.vocab_size),
              "set model.vocab_size: 256 or more");
  }
  const auto ends_with = [&](const std::string& suffix) {
    return d.path.size() >= suffix.size() && d.path.compare(d.path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".bin") || ends_with(".idx")) {
    check.add("data.path", fmt::format("'{}' names one file of an indexed dataset", d.path),
              fmt::format("give the prefix without the extension: '{}'", d.path.substr(0, d.path.size() - 4)));
  }
  const std::optional<std::array<double, 3>> split = parse_split(d.split);
  if (!split) {
    check.add("data.split", fmt::format("'{}' is not a list of up to three non-negative shares", d.split),
              "write train,valid,test shares such as 969,30,1 (or 1 for everything in training)");
  } else if ((*split)[0] <= 0) {
    check.add("data.split", fmt::format("'{}' leaves nothing for training", d.split), "give the first share a weight");
  } else if (c.train.eval_interval > 0 && (*split)[1] <= 0) {
    check.add("data.split", fmt::format("'{}' has no validation share, but train.eval_interval is {}", d.split,
                                        c.train.eval_interval),
              "give the second share a weight (e.g. 969,30,1) or set train.eval_interval: 0");
  }
  check.non_negative("train.eval_interval", static_cast<double>(c.train.eval_interval));
  check.positive("train.eval_iters", c.train.eval_iters);
}

void check_checkpoint(const Config& c, Checker& check) {
  const CheckpointConfig& ckpt = c.checkpoint;
  check.non_negative("checkpoint.save_interval", static_cast<double>(ckpt.save_interval));
  check.non_negative("checkpoint.keep_last", static_cast<double>(ckpt.keep_last));
  check.positive("checkpoint.writer_threads", ckpt.writer_threads);
  const bool saves = !ckpt.save.empty(), loads = !ckpt.load.empty();
  if (!saves && ckpt.save_interval > 0) {
    check.add("checkpoint.save_interval", fmt::format("{} steps, but checkpoint.save names no folder", ckpt.save_interval),
              "set checkpoint.save (--save DIR) or remove save_interval");
  }
  if (!saves && ckpt.async) {
    check.add("checkpoint.async", "true, but checkpoint.save names no folder", "set checkpoint.save (--save DIR)");
  }
  if (!saves && ckpt.on_save_error == SaveErrorPolicy::kWarn) {
    check.add("checkpoint.on_save_error", "warn, but checkpoint.save names no folder", "set checkpoint.save (--save DIR)");
  }
  if (saves && ckpt.on_save_error == SaveErrorPolicy::kWarn && ckpt.save_interval == 0) {
    check.add("checkpoint.on_save_error", "warn, but there are no periodic saves to skip (checkpoint.save_interval is 0)",
              "set checkpoint.save_interval, or leave on_save_error at stop");
  }
  if (!loads && ckpt.load_optional) {
    check.add("checkpoint.load_optional", "true, but checkpoint.load names no folder", "set checkpoint.load (--load DIR)");
  }
  // The sequential reference experts name their tensors by local index: they cannot be resharded.
  if ((saves || loads) && c.moe.enabled() && !c.moe.grouped_experts) {
    check.add("moe.grouped_experts", "false (the sequential reference experts) cannot be saved or loaded",
              "set moe.grouped_experts: true to use checkpoints");
  }
}

void check_data_and_rest(const Config& c, Checker& check) {
  check_data(c, check);
  check_checkpoint(c, check);
  check.positive("logging.log_interval", c.logging.log_interval);
  check.positive_real("logging.peak_tflops", c.logging.peak_tflops);
  check.non_negative("logging.sample_tokens", static_cast<double>(c.logging.sample_tokens));
  check.non_negative("logging.sample_temperature", c.logging.sample_temperature);
  check.non_negative("logging.sample_top_k", static_cast<double>(c.logging.sample_top_k));
  if (!(c.logging.sample_top_p > 0 && c.logging.sample_top_p <= 1)) {
    check.add("logging.sample_top_p", fmt::format("must be in (0, 1], got {}", c.logging.sample_top_p),
              "use e.g. 0.9, or 1 to sample from every token");
  }
  // top-k and top-p shape a sampled continuation; a greedy one (temperature 0) would ignore them.
  if (c.logging.sample_temperature == 0 && (c.logging.sample_top_k > 0 || c.logging.sample_top_p < 1)) {
    check.add(c.logging.sample_top_k > 0 ? "logging.sample_top_k" : "logging.sample_top_p",
              "top-k and top-p apply to a sampled continuation, but logging.sample_temperature is 0 (greedy)",
              "set logging.sample_temperature above 0 (e.g. 0.8), or leave top-k and top-p out");
  }
  check.non_negative("logging.profile_step", static_cast<double>(c.logging.profile_step));
}

}  // namespace

std::vector<ConfigProblem> check_config(const Config& config, int64_t world) {
  std::vector<ConfigProblem> problems;
  Checker check(problems);
  check_model(config, check);
  check_moe(config, check);
  check_parallel(config, world, check, problems);
  check_train(config, check);
  check_data_and_rest(config, check);
  return problems;
}

void validate_config(const Config& config, int64_t world) {
  std::vector<ConfigProblem> problems = check_config(config, world);
  if (!problems.empty()) throw ConfigError(std::move(problems));
}

}  // namespace foldtron
