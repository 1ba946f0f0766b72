// Typed configuration: one struct per YAML section (model, moe, parallel, train, data,
// translation, discourse, checkpoint, logging). Each struct lists its keys once, in visit(), with
// the default and a one-line description; the YAML reader, the YAML writer and `foldtron config
// --keys` are all visitors over that list, so a key cannot be known to one and missing from another.
//
// Loading (config_load.h) composes: preset < --config file < --set overrides < parallel flags.
// Validation (validate.h) checks the whole config against a world size and reports every problem.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"

namespace foldtron {

// ---- enumerations (spelled in YAML as the strings of enum_names) ----

// Model families (models/registry.cpp): decoder-only language models (llama dense; mixtral,
// qwen2_moe, qwen3_moe with experts) and the encoder-decoder (marian, also XLM-style).
enum class Architecture { kLlama, kMixtral, kQwen2Moe, kQwen3Moe, kMarian };
enum class Normalization { kRmsNorm, kLayerNorm };
// swiglu is gated (down(silu(gate x) * up x)); the others are fc2(act(fc1 x)).
enum class Activation { kSwiglu, kGelu, kRelu, kSilu };
enum class NormPosition { kPre, kPost };  // norm before each sublayer (Llama) or after the residual add (Marian, XLM)
enum class PositionKind { kRotary, kLearned, kSinusoidal };
enum class DType { kFloat32, kBfloat16 };
enum class RouterScore { kSoftmax, kSigmoid };
enum class LoadBalancing { kAuxLoss, kSeqAuxLoss, kSinkhorn, kNone };
enum class DropPolicy { kProbs, kPosition };
enum class Dispatcher { kAllToAll, kAllGather };
enum class CpCommType { kP2P, kAllToAll, kAllGather };
enum class LrDecay { kCosine, kLinear, kConstant };
// Activation recomputation: none; full (whole layers, in blocks of recompute_num_layers); or
// selective: core attention, the experts' activation and output projection, or both.
enum class Recompute { kNone, kFull, kCoreAttn, kMoeAct, kSelective };
enum class Tokenizer { kByte, kSentencePiece };
enum class SaveErrorPolicy { kStop, kWarn };

// Every enumeration's YAML spellings, in declaration order.
template <typename E>
const std::vector<std::string>& enum_names();

template <typename E>
const std::string& enum_name(E value) {
  return enum_names<E>().at(static_cast<size_t>(value));
}

// ---- sections ----

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  int64_t num_layers = 4;
  int64_t hidden_size = 64;
  int64_t num_attention_heads = 8;
  int64_t num_query_groups = 4;  // key/value heads (GQA); = num_attention_heads for MHA
  int64_t head_dim = 0;          // 0: hidden_size / num_attention_heads
  int64_t ffn_hidden_size = 256;
  int64_t vocab_size = 256;
  int64_t max_position_embeddings = 4096;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  Normalization normalization = Normalization::kRmsNorm;
  Activation activation = Activation::kSwiglu;
  bool qkv_bias = false;
  bool linear_bias = false;
  bool qk_norm = false;
  NormPosition norm_position = NormPosition::kPre;
  PositionKind position_embedding = PositionKind::kRotary;
  int64_t encoder_layers = 0;
  bool scale_embeddings = false;
  bool embedding_norm = false;
  int64_t num_languages = 0;
  bool final_logits_bias = false;
  int64_t pad_token_id = -1;
  int64_t decoder_start_token_id = -1;
  bool tie_embeddings = false;
  DType params_dtype = DType::kFloat32;
  double init_std = 0.02;
  double hidden_dropout = 0.0;
  double attention_dropout = 0.0;
  Recompute recompute = Recompute::kNone;
  int64_t recompute_num_layers = 1;

  int64_t kv_channels() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  bool encoder_decoder() const { return architecture == Architecture::kMarian; }
  // Layers of the whole model: the encoder's, then the decoder's (num_layers).
  int64_t total_layers() const { return encoder_layers + num_layers; }
  bool gated_mlp() const { return activation == Activation::kSwiglu; }

  bool recompute_core_attn() const { return recompute == Recompute::kCoreAttn || recompute == Recompute::kSelective; }
  bool recompute_moe_act() const { return recompute == Recompute::kMoeAct || recompute == Recompute::kSelective; }
  template <typename V>
  void visit(V& v) {
    v("architecture", architecture,
      "model family: llama (dense), mixtral, qwen2_moe, qwen3_moe (decoder-only), marian (encoder-decoder)");
    v("num_layers", num_layers, "transformer layers (encoder-decoder: the decoder's)");
    v("encoder_layers", encoder_layers, "encoder layers of an encoder-decoder (0 for decoder-only models)");
    v("hidden_size", hidden_size, "model width h");
    v("num_attention_heads", num_attention_heads, "query heads a");
    v("num_query_groups", num_query_groups, "key/value heads (grouped-query attention)");
    v("head_dim", head_dim, "channels per head; 0 means hidden_size / num_attention_heads");
    v("ffn_hidden_size", ffn_hidden_size, "dense MLP width (dense layers)");
    v("vocab_size", vocab_size, "vocabulary size V");
    v("max_position_embeddings", max_position_embeddings, "longest sequence the rotary tables cover");
    v("rope_theta", rope_theta, "rotary base frequency");
    v("norm_eps", norm_eps, "epsilon of RMSNorm / LayerNorm");
    v("normalization", normalization, "rmsnorm or layernorm");
    v("activation", activation, "swiglu (gated), or gelu, relu, silu (fc2(act(fc1 x)))");
    v("qkv_bias", qkv_bias, "bias on the query/key/value projections (Qwen2)");
    v("linear_bias", linear_bias, "bias on every attention and MLP projection (Marian, XLM)");
    v("qk_norm", qk_norm, "RMSNorm of each query and key head before rotary (Qwen3)");
    v("norm_position", norm_position, "pre (norm before each sublayer) or post (after the residual add)");
    v("position_embedding", position_embedding,
      "rotary (q and k rotated), learned or sinusoidal (added to the embeddings)");
    v("scale_embeddings", scale_embeddings, "multiply the token embeddings by sqrt(hidden_size)");
    v("embedding_norm", embedding_norm, "normalize the embeddings (after positions and languages; XLM)");
    v("num_languages", num_languages, "learned language embeddings added to every position (0: none)");
    v("final_logits_bias", final_logits_bias, "a bias over the vocabulary added to the logits (Marian)");
    v("pad_token_id", pad_token_id, "padding token: its embedding row gets no gradient from lookups; -1: none");
    v("decoder_start_token_id", decoder_start_token_id, "first decoder token of an encoder-decoder; -1: none");
    v("tie_embeddings", tie_embeddings, "share the input embedding with the output layer");
    v("params_dtype", params_dtype, "parameter dtype: fp32 or bf16 (bf16 keeps fp32 main weights)");
    v("init_std", init_std, "standard deviation of the normal weight initialization");
    v("hidden_dropout", hidden_dropout, "dropout after attention and MLP");
    v("attention_dropout", attention_dropout, "dropout on attention probabilities");
    v("recompute", recompute,
      "activation recomputation: none, full (whole layers), core_attn, moe_act (expert activation and output "
      "projection) or selective (core_attn and moe_act)");
    v("recompute_num_layers", recompute_num_layers, "full recomputation: layers per recomputed block");
  }
};

struct MoEConfig {
  int64_t num_experts = 0;  // 0: dense model
  int64_t topk = 2;
  int64_t expert_ffn_hidden_size = 0;         // 0: model.ffn_hidden_size
  int64_t shared_expert_ffn_hidden_size = 0;  // 0: no shared expert
  bool shared_expert_gate = false;            // sigmoid gate on the shared expert (Qwen2-MoE)
  int64_t layer_step = 1;                     // an MoE layer every layer_step layers
  std::vector<int64_t> dense_layers;          // layer indices that stay dense
  RouterScore router_score = RouterScore::kSoftmax;
  bool router_pre_softmax = true;  // softmax over all experts before top-k (Mixtral, Qwen)
  bool normalize_topk = true;      // renormalize the k selected probabilities
  bool router_fp32 = true;         // router logits and softmax in fp32
  bool router_fp64 = false;        // ... in fp64 (equivalence tests: near-ties never flip)
  double router_scaling_factor = 1.0;
  int64_t router_num_groups = 0;  // group-limited routing: 0 disables
  int64_t router_group_topk = 0;
  LoadBalancing load_balancing = LoadBalancing::kAuxLoss;
  double aux_loss_coeff = 0.01;
  double z_loss_coeff = 0.0;
  bool expert_bias = false;  // aux-loss-free balancing bias
  double expert_bias_update_rate = 1e-3;
  double capacity_factor = 0.0;  // 0: dropless
  DropPolicy drop_policy = DropPolicy::kProbs;
  bool pad_to_capacity = false;
  Dispatcher dispatcher = Dispatcher::kAllToAll;
  bool grouped_experts = true;  // one grouped GEMM over the local experts; false: sequential reference

  int64_t expert_ffn(int64_t dense_ffn) const { return expert_ffn_hidden_size > 0 ? expert_ffn_hidden_size : dense_ffn; }
  bool enabled() const { return num_experts > 0; }
  // Layer `layer` (0-based) is an MoE layer: layer % layer_step == 0 and not in dense_layers.
  bool is_moe_layer(int64_t layer) const {
    if (!enabled() || layer % layer_step != 0) return false;
    for (int64_t dense : dense_layers) {
      if (dense == layer) return false;
    }
    return true;
  }
  template <typename V>
  void visit(V& v) {
    v("num_experts", num_experts, "routed experts per MoE layer; 0 makes a dense model");
    v("topk", topk, "experts each token is routed to");
    v("expert_ffn_hidden_size", expert_ffn_hidden_size, "routed expert FFN width; 0 means model.ffn_hidden_size");
    v("shared_expert_ffn_hidden_size", shared_expert_ffn_hidden_size, "shared expert FFN width; 0 means none");
    v("shared_expert_gate", shared_expert_gate, "scale the shared expert by sigmoid(gate(x))");
    v("layer_step", layer_step, "an MoE layer every layer_step layers (1: every layer)");
    v("dense_layers", dense_layers, "indices of layers that keep a dense MLP");
    v("router_score", router_score, "softmax or sigmoid scoring");
    v("router_pre_softmax", router_pre_softmax, "softmax over all experts before top-k (else top-k on logits, then softmax)");
    v("normalize_topk", normalize_topk, "renormalize the selected k probabilities to sum to 1");
    v("router_fp32", router_fp32, "compute the router in fp32");
    v("router_fp64", router_fp64, "compute the router in fp64 (layout-equivalence tests: ties never flip)");
    v("router_scaling_factor", router_scaling_factor, "scale applied to the routing weights");
    v("router_num_groups", router_num_groups, "expert groups for group-limited routing (0: off)");
    v("router_group_topk", router_group_topk, "groups each token may select from");
    v("load_balancing", load_balancing, "aux_loss, seq_aux_loss, sinkhorn or none");
    v("aux_loss_coeff", aux_loss_coeff, "load-balancing loss coefficient");
    v("z_loss_coeff", z_loss_coeff, "router z-loss coefficient");
    v("expert_bias", expert_bias, "aux-loss-free balancing with a per-expert selection bias");
    v("expert_bias_update_rate", expert_bias_update_rate, "step of the expert-bias update");
    v("capacity_factor", capacity_factor, "expert capacity factor; 0 means dropless");
    v("drop_policy", drop_policy, "which tokens over capacity are dropped: probs or position");
    v("pad_to_capacity", pad_to_capacity, "pad every expert to its capacity (static shapes)");
    v("dispatcher", dispatcher, "token dispatcher: alltoall or allgather");
    v("grouped_experts", grouped_experts, "grouped experts (one GEMM over local experts); false: sequential reference");
  }
};

struct ParallelConfig {
  int64_t tp = 1;
  int64_t cp = 1;
  int64_t pp = 1;
  int64_t vpp = 1;
  int64_t ep = 1;
  int64_t etp = 0;  // 0: same as tp
  std::string order = "tp-cp-ep-dp-pp";
  bool sequence_parallel = false;
  CpCommType cp_comm_type = CpCommType::kAllGather;
  std::vector<int64_t> pipeline_layers;  // explicit layers per chunk (pp*vpp); empty: even split
  bool distributed_optimizer = false;
  bool overlap_grad_reduce = true;
  bool gradient_accumulation_fusion = true;
  double grad_bucket_mb = 40.0;
  double timeout_s = 600.0;
  int64_t devices_per_node = 0;  // 0: as many as CUDA reports

  int64_t expert_tp() const { return etp > 0 ? etp : tp; }
  template <typename V>
  void visit(V& v) {
    v("tp", tp, "tensor-parallel size (attention and dense layers)");
    v("cp", cp, "context-parallel size");
    v("pp", pp, "pipeline-parallel size");
    v("vpp", vpp, "virtual pipeline stages per rank (interleaved 1F1B); 1 disables");
    v("ep", ep, "expert-parallel size");
    v("etp", etp, "expert tensor-parallel size; 0 means the same as tp");
    v("order", order, "rank order of the parallel axes, fastest first");
    v("sequence_parallel", sequence_parallel, "split norms and dropout over the sequence across tp");
    v("cp_comm_type", cp_comm_type, "context-parallel attention: p2p (ring), a2a (Ulysses) or allgather");
    v("pipeline_layers", pipeline_layers,
      "layers per pipeline chunk: pp*vpp counts in model order, chunk c on pp rank c mod pp; empty splits evenly");
    v("distributed_optimizer", distributed_optimizer,
      "shard fp32 main weights and Adam moments over dp_cp (dense) and edp (experts): reduce-scatter gradients, "
      "all-gather parameters");
    v("overlap_grad_reduce", overlap_grad_reduce, "reduce gradient buckets during backward as they complete");
    v("gradient_accumulation_fusion", gradient_accumulation_fusion,
      "bf16 expert weight gradients written by the GEMM straight into the fp32 main gradients (CUDA, torch >= 2.9)");
    v("grad_bucket_mb", grad_bucket_mb, "MiB of main gradients (fp32, or bf16 with train.main_grads_dtype) per reduction bucket");
    v("timeout_s", timeout_s, "seconds a collective may stall before the job aborts naming it");
    v("devices_per_node", devices_per_node, "GPUs per node for the rank -> device map; 0 means all visible");
  }
};

struct TrainConfig {
  int64_t train_iters = 100;
  int64_t global_batch_size = 8;
  int64_t micro_batch_size = 1;
  int64_t seq_length = 64;
  int64_t seed = 1234;
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t lr_warmup_iters = 0;
  LrDecay lr_decay_style = LrDecay::kCosine;
  int64_t lr_decay_iters = 0;  // 0: train_iters
  double weight_decay = 0.1;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.95;
  double adam_eps = 1e-8;
  DType adam_moments_dtype = DType::kFloat32;
  DType main_grads_dtype = DType::kFloat32;  // of bf16 parameters (fp32 ones keep fp32 gradients)
  double clip_grad = 1.0;  // 0 disables clipping
  int64_t max_bad_steps = 5;
  int64_t eval_interval = 0;  // 0: no validation during training
  int64_t eval_iters = 10;

  template <typename V>
  void visit(V& v) {
    v("train_iters", train_iters, "optimizer steps to run");
    v("global_batch_size", global_batch_size, "sequences per optimizer step, over all data-parallel ranks");
    v("micro_batch_size", micro_batch_size, "sequences per forward/backward on one rank");
    v("seq_length", seq_length, "tokens per sequence");
    v("seed", seed, "seed of initialization, data order and dropout");
    v("lr", lr, "peak learning rate");
    v("min_lr", min_lr, "learning rate at the end of the decay");
    v("lr_warmup_iters", lr_warmup_iters, "linear warmup steps");
    v("lr_decay_style", lr_decay_style, "cosine, linear or constant");
    v("lr_decay_iters", lr_decay_iters, "steps of the decay; 0 means train_iters");
    v("weight_decay", weight_decay, "AdamW decoupled weight decay (not on norms and biases)");
    v("adam_beta1", adam_beta1, "AdamW beta1");
    v("adam_beta2", adam_beta2, "AdamW beta2");
    v("adam_eps", adam_eps, "AdamW epsilon");
    v("adam_moments_dtype", adam_moments_dtype,
      "storage of the AdamW moments: fp32, or bf16 (half their memory and traffic; the update is computed in fp32)");
    v("main_grads_dtype", main_grads_dtype,
      "main gradients of bf16 parameters: fp32, or bf16 (accumulated over micro-batches and reduced in bf16: half "
      "their memory and traffic; needs model.params_dtype bf16)");
    v("clip_grad", clip_grad, "global gradient-norm clip; 0 disables");
    v("max_bad_steps", max_bad_steps, "consecutive NaN/Inf steps skipped before the run aborts");
    v("eval_interval", eval_interval,
      "steps between validation-loss evaluations (also after the last step); 0: none");
    v("eval_iters", eval_iters, "global batches of the validation split each evaluation reads");
  }
};

struct DataConfig {
  std::string path;  // empty: the embedded default corpus
  Tokenizer tokenizer = Tokenizer::kByte;
  std::string tokenizer_model;
  std::string split = "969,30,1";
  std::string required_tokens;
  bool mock = false;

  template <typename V>
  void visit(V& v) {
    v("path", path,
      "indexed dataset prefix P (P.bin/P.idx from foldtron preprocess), a blend 'W1 P1 W2 P2 ...', or text read as "
      "bytes (a file or folder; tokenizer byte); empty: /usr/share/common-licenses");
    v("tokenizer", tokenizer, "byte or sentencepiece");
    v("tokenizer_model", tokenizer_model, "sentencepiece model file (tokenizer: sentencepiece)");
    v("split", split, "train,valid,test shares of each dataset's documents, e.g. 969,30,1");
    v("required_tokens", required_tokens,
      "pieces the run relies on, space-separated (language tags, <mask>): each must be one token of the tokenizer "
      "with an id below model.vocab_size");
    v("mock", mock, "synthetic random tokens (benchmarks measure the model, not the loader)");
  }
};

// data.split as three non-negative shares (train, valid, test; missing ones are 0), or nothing
// when the text is not such a list or the shares sum to 0.
std::optional<std::array<double, 3>> parse_split(const std::string& text);

// The translation task (tasks/unmt/translation_task.h): an encoder-decoder trained on several
// objectives at once, each with its weight, from a corpus preprocessed into indexed datasets.
// Empty `data` leaves it off (foldtron train runs the language-model task).
struct TranslationConfig {
  std::string data;
  std::string languages = "en de fr";
  std::string mono = "en=train.en de=train.de fr=train.en-fr.fr";
  std::string parallel = "en-fr=train.en-fr en-de=train.en-de";
  std::string valid = "en-de=dev.catalogs";
  std::string test = "en-de=test.catalogs";
  std::string ae;
  std::string ae_lambda = "0:1,100000:0.1,300000:0";
  std::string bt;
  std::string bt_lambda = "1";
  std::string para;
  std::string para_lambda = "1";
  std::string mlm;
  double mlm_probability = 0.15;
  int64_t max_length = 100;
  int64_t word_shuffle = 3;
  double word_dropout = 0.1;
  double word_blank = 0.1;
  double bt_max_len_a = 1.3;
  int64_t bt_max_len_b = 5;
  double bt_temperature = 0.0;

  bool enabled() const { return !data.empty(); }
  template <typename V>
  void visit(V& v) {
    v("data", data, "folder of the corpus preprocessed into indexed datasets (<name>.bin/.idx); empty: no translation task");
    v("languages", languages, "languages in language-embedding order, space-separated (model.num_languages covers them)");
    v("mono", mono, "monolingual datasets: 'lang=name ...'");
    v("parallel", parallel, "parallel datasets: 'l1-l2=name ...' (name.l1 and name.l2, line-aligned)");
    v("valid", valid, "validation pairs 'l1-l2=name ...', evaluated in both directions");
    v("test", test, "test pairs 'l1-l2=name ...', evaluated in both directions");
    v("ae", ae, "languages trained by denoising auto-encoding, e.g. 'en de'; empty: none");
    v("ae_lambda", ae_lambda, "weight of the denoising loss: a number or 'step:value,...' (linear in between)");
    v("bt", bt, "online back-translation directions 'a-b-a ...' (a sentence in a, translated to b, learned back)");
    v("bt_lambda", bt_lambda, "weight of the back-translation loss: a number or 'step:value,...'");
    v("para", para, "supervised directions 'a-b ...' from the parallel datasets");
    v("para_lambda", para_lambda, "weight of the supervised loss: a number or 'step:value,...'");
    v("mlm", mlm, "languages pretrained by masked language modelling, e.g. 'en de fr' (XLM's first stage: the encoder "
                  "alone, in a run of its own; then foldtron unmt init-decoder)");
    v("mlm_probability", mlm_probability, "masked language modelling: share of tokens predicted (80% masked, 10% "
                                          "random, 10% kept)");
    v("max_length", max_length, "tokens per side, end-of-sequence included (longer sentences are cut)");
    v("word_shuffle", word_shuffle, "denoising: words move at most this far (0: no shuffle)");
    v("word_dropout", word_dropout, "denoising: probability of dropping each word");
    v("word_blank", word_blank, "denoising: probability of replacing each word by <unk>");
    v("bt_max_len_a", bt_max_len_a, "back-translation: at most a * source length + b new tokens");
    v("bt_max_len_b", bt_max_len_b, "back-translation: the b of a * source length + b");
    v("bt_temperature", bt_temperature, "back-translation: sampling temperature; 0 decodes greedily");
  }
};

// The discourse relation classifier (tasks/discourse/, `foldtron discourse train|eval|predict`):
// a baseline or the multi-grained model, with or without the memory of training instances, trained
// data-parallel over every rank on the relations of a corpus folder. Its own job: the model,
// train and data sections do not apply to it (the contextual encoder brings its own config).
struct DiscourseConfig {
  std::string data;
  std::string types = "Implicit";
  std::string level = "4way";
  std::string model = "multigrained";
  std::string grains = "char word context pair";
  std::string encoder;
  int64_t max_words = 60;
  int64_t word_vocab = 20000;
  int64_t word_dim = 100;
  int64_t char_dim = 24;
  std::vector<int64_t> char_widths{2, 3, 4};
  int64_t char_channels = 64;
  int64_t highway_layers = 2;
  int64_t conv_layers = 3;
  int64_t conv_width = 3;
  int64_t channels = 256;
  int64_t kmax = 2;
  int64_t hidden = 256;
  double dropout = 0.3;
  double connective_weight = 0.5;
  bool memory = false;
  double memory_alpha = 0.3;
  bool memory_active_set = true;
  int64_t epochs = 10;
  int64_t batch_size = 64;
  int64_t eval_batch_size = 256;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double clip_grad = 5.0;
  int64_t seed = 1;

  template <typename V>
  void visit(V& v) {
    v("data", data, "folder holding train.json, dev.json and test.json (CoNLL relations.json form: foldtron "
                    "discourse split or corpus writes them)");
    v("types", types, "relation types classified, space-separated (Implicit for PDTB; Explicit for the silver corpus)");
    v("level", level, "4way (top-level senses) or 11way (the eleven level-2 types)");
    v("model", model, "baseline (the encoder over [Arg1; SEP; Arg2], a linear classifier) or multigrained");
    v("grains", grains, "multigrained inputs and interaction: any of char word context pair (context needs encoder)");
    v("encoder", encoder, "checkpoint of an encoder pretrained by masked language modelling (translation.mlm), read "
                          "frozen; its tokenizer too; empty: none");
    v("max_words", max_words, "words kept per argument (longer arguments are cut)");
    v("word_vocab", word_vocab, "word embeddings: the most frequent training words (the rest share <unk>)");
    v("word_dim", word_dim, "width of the word embeddings");
    v("char_dim", char_dim, "width of the character embeddings");
    v("char_widths", char_widths, "widths of the character convolutions");
    v("char_channels", char_channels, "filters per character convolution width");
    v("highway_layers", highway_layers, "highway layers after the character convolutions");
    v("conv_layers", conv_layers, "stacked gated convolutions per argument");
    v("conv_width", conv_width, "width of those convolutions (odd)");
    v("channels", channels, "channels of the gated convolutions");
    v("kmax", kmax, "k of the k-max pooling after every layer");
    v("hidden", hidden, "width of the pair representation (the memory's keys)");
    v("dropout", dropout, "dropout on the inputs and on the pooled features (baseline: on the pooled encoding)");
    v("connective_weight", connective_weight, "weight of the auxiliary connective prediction loss; 0: none");
    v("memory", memory, "read a memory of every training instance (multigrained only)");
    v("memory_alpha", memory_alpha, "weight of the memory's relation read-out against the classifier's");
    v("memory_active_set", memory_active_set, "read only the instances classified correctly in the last epoch "
                                              "(false: all), class-balanced");
    v("epochs", epochs, "passes over the training instances");
    v("batch_size", batch_size, "instances per optimizer step, over all data-parallel ranks");
    v("eval_batch_size", eval_batch_size, "instances per forward when evaluating or encoding");
    v("lr", lr, "AdamW learning rate (constant)");
    v("weight_decay", weight_decay, "AdamW weight decay");
    v("clip_grad", clip_grad, "gradient norm clipping; 0: none");
    v("seed", seed, "seed of the initialization, dropout and the order of instances");
  }
};

struct CheckpointConfig {
  std::string save;
  std::string load;
  int64_t save_interval = 0;  // 0: only at the end when save is set
  int64_t keep_last = 2;
  bool async = false;
  int64_t writer_threads = 4;
  bool load_optional = false;
  SaveErrorPolicy on_save_error = SaveErrorPolicy::kStop;

  template <typename V>
  void visit(V& v) {
    v("save", save, "folder to save checkpoints into (also at the end and on SIGTERM/SIGINT); empty saves nothing");
    v("load", load, "save folder (its latest checkpoint) or checkpoint folder to resume from; empty starts fresh");
    v("save_interval", save_interval, "steps between checkpoints; 0 saves only at the end");
    v("keep_last", keep_last, "complete checkpoints kept (older ones removed after a new one is complete); 0: all");
    v("async", async, "write checkpoints from host copies while training goes on");
    v("writer_threads", writer_threads, "threads (and files) per rank writing a checkpoint; also verify it on load");
    v("load_optional", load_optional, "start fresh when checkpoint.load holds no checkpoint yet (else an error)");
    v("on_save_error", on_save_error, "a periodic save that fails (disk full, unwritable): stop the job, or warn and "
                                      "train on to the next save (the final and SIGTERM saves always stop)");
  }
};

struct LoggingConfig {
  int64_t log_interval = 1;
  std::string metrics_file;
  log::Level level = log::Level::kInfo;
  std::string run_dir;
  double peak_tflops = 989.0;
  std::string sample_prompt = "The license";
  int64_t sample_tokens = 0;
  double sample_temperature = 0.0;
  int64_t sample_top_k = 0;
  double sample_top_p = 1.0;
  int64_t sample_seed = 0;
  int64_t profile_step = 0;
  std::string profile_file = "trace.json";

  template <typename V>
  void visit(V& v) {
    v("log_interval", log_interval, "steps between progress lines and metrics records");
    v("metrics_file", metrics_file, "JSONL file with one record per logged step");
    v("level", level, "debug, info, warning or error");
    v("run_dir", run_dir, "directory for the resolved config and logs; empty: none");
    v("peak_tflops", peak_tflops, "peak TFLOP/s per GPU for MFU (989: H100/H200 dense bf16)");
    v("sample_prompt", sample_prompt, "prompt of the continuation printed after training");
    v("sample_tokens", sample_tokens, "tokens of that continuation (0: none)");
    v("sample_temperature", sample_temperature, "sampling temperature of that continuation; 0 decodes greedily");
    v("sample_top_k", sample_top_k, "sample among the k most likely tokens (0: all)");
    v("sample_top_p", sample_top_p, "sample among the most likely tokens holding this probability (1: all)");
    v("sample_seed", sample_seed, "seed of the sampled continuation");
    v("profile_step", profile_step, "step (1-based) traced with the torch profiler on rank 0; 0: none");
    v("profile_file", profile_file, "Chrome trace JSON file of that step");
  }
};

struct Config {
  ModelConfig model;
  MoEConfig moe;
  ParallelConfig parallel;
  TrainConfig train;
  DataConfig data;
  TranslationConfig translation;
  DiscourseConfig discourse;
  CheckpointConfig checkpoint;
  LoggingConfig logging;

  template <typename V>
  void visit(V& v) {
    v.section("model", model);
    v.section("moe", moe);
    v.section("parallel", parallel);
    v.section("train", train);
    v.section("data", data);
    v.section("translation", translation);
    v.section("discourse", discourse);
    v.section("checkpoint", checkpoint);
    v.section("logging", logging);
  }
};

}  // namespace foldtron
