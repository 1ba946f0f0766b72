// The encoder-decoder Transformer (see encoder_decoder.h).
#include "models/encoder_decoder.h"

#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "layers/embedding.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "layers/positions.h"
#include "parallel/rng.h"

namespace foldtron {

EncoderDecoder::EncoderDecoder(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe,
                               ModelPart part, std::shared_ptr<ParamRegistry> registry,
                               std::shared_ptr<RngTracker> rng)
    : Model(ctx, std::move(part), std::move(registry), std::move(rng)),
      architecture_(model.architecture),
      vocab_size_(model.vocab_size),
      hidden_size_(model.hidden_size),
      encoder_layers_(model.encoder_layers),
      embed_scale_(model.scale_embeddings ? std::sqrt(static_cast<double>(model.hidden_size)) : 1.0),
      dropout_(model.hidden_dropout),
      rotary_(model.position_embedding == PositionKind::kRotary) {
  recompute_ = model.recompute;
  recompute_num_layers_ = model.recompute_num_layers;
  const bool first = part_.is_first_stage(), last = part_.is_last_stage();
  if (first || (last && model.tie_embeddings)) {
    shared = register_module("shared", std::make_shared<VocabParallelEmbedding>(
                                           ctx, "model.shared", model.vocab_size, model.hidden_size, model.init_std,
                                           model.pad_token_id));
    if (model.tie_embeddings && part_.pp > 1) tie_across_stages(ctx, shared->weight);
  }
  auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
  auto decoder = register_module("decoder", std::make_shared<torch::nn::Module>());
  if (first) {
    build_embeddings(encoder_embeddings, *encoder, "model.encoder", model);
    build_embeddings(decoder_embeddings, *decoder, "model.decoder", model);
  }
  TransformerLayerOptions options = transformer_layer_options(model);
  auto encoder_stack = encoder->register_module("layers", std::make_shared<torch::nn::Module>());
  auto decoder_stack = decoder->register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t chunk = 0; chunk < part_.num_chunks(); ++chunk) {
    for (int64_t i = part_.begin(chunk); i < part_.end(chunk); ++i) {
      const bool in_encoder = i < encoder_layers_;
      const int64_t local = in_encoder ? i : i - encoder_layers_;
      const std::string name = fmt::format("model.{}.layers.{}", in_encoder ? "encoder" : "decoder", local);
      options.index = i;
      options.cross_attention = !in_encoder;
      auto layer =
          std::make_shared<TransformerLayer>(ctx, name, options, feed_forward(ctx, name + ".mlp", i, model, moe));
      add_layer(i, (in_encoder ? encoder_stack : decoder_stack)->register_module(std::to_string(local), layer));
    }
  }
  const auto stack_norm = [&] {
    return std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps);
  };
  if (model.norm_position == NormPosition::kPre) {
    if (part_.holds_layer(encoder_layers_ - 1)) encoder_norm = encoder->register_module("norm", stack_norm());
    if (last) decoder_norm = decoder->register_module("norm", stack_norm());
  }
  if (last) {
    const int64_t padded = padded_vocab(model.vocab_size, ctx.tp_size());
    if (!model.tie_embeddings) {
      lm_head = register_module("lm_head", std::make_shared<ColumnParallelLinear>(ctx, "lm_head", model.hidden_size,
                                                                                 model.vocab_size, false, model.init_std,
                                                                                 false, padded - model.vocab_size));
    }
    if (model.final_logits_bias) {
      // Not trained (a buffer, as in Hugging Face's Marian); split over tp like the vocabulary.
      ParamInfo info;
      info.tp_split_dim = 0;
      info.split_rank = ctx.tp_rank();
      info.split_size = ctx.tp_size();
      info.padded_rows = padded - model.vocab_size;
      final_logits_bias = register_buffer(
          "final_logits_bias", shard_of(torch::zeros({model.vocab_size}), info).to(ctx.device, ctx.dtype));
      ctx.registry->add(final_logits_bias, info);
    }
  }
}

void EncoderDecoder::build_embeddings(Embeddings& embeddings, torch::nn::Module& owner, const std::string& name,
                                      const ModelConfig& model) {
  if (!rotary_) {
    embeddings.positions = owner.register_module(
        "embed_positions", std::make_shared<PositionEmbedding>(ctx_, name + ".embed_positions", model.position_embedding,
                                                               model.max_position_embeddings, model.hidden_size,
                                                               model.init_std));
  }
  if (model.num_languages > 0) {
    embeddings.languages = owner.register_module("embed_languages", std::make_shared<torch::nn::Module>());
    embeddings.language_weight = embeddings.languages->register_parameter(
        "weight", replicated_param(ctx_, full_normal(ctx_, name + ".embed_languages.weight",
                                                     {model.num_languages, model.hidden_size}, model.init_std),
                                   ctx_.sequence_parallel));
  }
  if (model.embedding_norm) {
    embeddings.norm = owner.register_module(
        "embedding_norm", std::make_shared<Norm>(ctx_, model.normalization, model.hidden_size, model.norm_eps));
  }
}

torch::Tensor EncoderDecoder::positions_or_default(const torch::Tensor& positions, int64_t length) const {
  if (positions.defined()) return positions;
  return torch::arange(length, torch::TensorOptions().dtype(torch::kLong).device(ctx_.device));
}

torch::Tensor EncoderDecoder::embed(const Embeddings& embeddings, const torch::Tensor& ids,
                                    const torch::Tensor& positions, const torch::Tensor& languages) {
  torch::Tensor x = shared->forward(ids);  // [s(/tp), b, h]: this rank's rows with SP
  if (embed_scale_ != 1.0) x = x * embed_scale_;
  if (embeddings.positions) x = x + embeddings.positions->forward(local_rows(positions_or_default(positions, ids.size(0))));
  if (languages.defined()) {
    const int64_t count = embeddings.languages ? embeddings.language_weight.size(0) : 0;
    const int64_t low = languages.min().item<int64_t>(), high = languages.max().item<int64_t>();
    if (low < 0 || high >= count) {
      throw DataError(fmt::format("language ids in [{}, {}], but the model has {} language embeddings", low, high, count),
                      count == 0 ? "leave the language ids out, or set model.num_languages"
                                 : fmt::format("use ids in [0, {})", count));
    }
    x = x + torch::embedding(embeddings.language_weight, languages).unsqueeze(0);  // [1, b, h]
  }
  if (embeddings.norm) x = embeddings.norm->forward(x);
  if (is_training() && dropout_ > 0) {
    x = ctx_.rng->dropout(x, dropout_, ctx_.sp() ? RngStream::kModelParallel : RngStream::kData);
  }
  return x;
}

StreamSpec EncoderDecoder::stream_spec(const ModelInputs& inputs, const KVCache* cache) const {
  const int64_t split = ctx_.sp() ? ctx_.tp_size() : 1, b = inputs.decoder_input_ids.size(1);
  const int64_t source = cache && cache->encoder_done ? 0 : inputs.input_ids.size(0) / split;
  const int64_t target = inputs.encoder_only ? 0 : inputs.decoder_input_ids.size(0) / split;
  const auto options = torch::TensorOptions().dtype(ctx_.dtype).device(ctx_.device);
  return {{{source, b, hidden_size_}, options}, {{target, b, hidden_size_}, options}};
}

TensorList EncoderDecoder::forward_chunk(int64_t chunk, const ModelInputs& inputs, const TensorList& stream,
                                         ForwardState& state) {
  FT_CHECK(chunk >= 0 && chunk < part_.num_chunks(), fmt::format("no local pipeline chunk {}", chunk));
  const bool encoder_cached = state.cache && state.cache->encoder_done;
  const int64_t b = inputs.decoder_input_ids.size(1);
  torch::Tensor enc, dec;  // [s(/tp), b, h], [t(/tp), b, h]
  const bool encoder_only = inputs.encoder_only;
  FT_CHECK(!(encoder_only && state.cache), "encoder-only logits while decoding");
  if (part_.has_embedding(chunk)) {
    if (!encoder_cached) enc = embed(encoder_embeddings, inputs.input_ids, inputs.positions, inputs.languages);
    dec = encoder_only ? torch::empty({0, b, hidden_size_}, enc.options())
                       : embed(decoder_embeddings, inputs.decoder_input_ids, inputs.decoder_positions,
                               inputs.decoder_languages);
  } else {
    enc = stream.at(0);
    dec = stream.at(1);
  }
  if (encoder_cached) enc = torch::empty({0, b, hidden_size_}, dec.options());
  const int64_t begin = part_.begin(chunk), end = part_.end(chunk);
  if (!encoder_cached && begin < encoder_layers_) {
    LayerInputs in;
    in.positions = positions_or_default(inputs.positions, inputs.input_ids.size(0));
    in.causal = false;
    in.key_padding = key_padding_of(inputs.mask);
    in.token_mask = local_rows(inputs.mask);
    attention_masks(in, inputs.input_ids.size(0), 0, /*cached=*/false, ctx_.device);
    // The encoder runs once while decoding: its self-attention keeps no cache.
    KVCache* cache = state.cache;
    state.cache = nullptr;
    enc = run_layers(begin, std::min(end, encoder_layers_), enc, in, state);
    state.cache = cache;
    if (end >= encoder_layers_) {  // the encoder ends in this chunk
      if (encoder_norm) enc = encoder_norm->forward(enc);
      if (state.hidden_states) state.hidden_states->push_back(enc);
    }
  }
  if (end > encoder_layers_ && !encoder_only) {
    LayerInputs in;
    in.positions = positions_or_default(inputs.decoder_positions, inputs.decoder_input_ids.size(0));
    in.causal = true;
    in.key_padding = state.cache ? state.cache->key_padding : key_padding_of(inputs.decoder_mask);
    in.memory = enc;
    in.memory_padding = state.cache && state.cache->encoder_padding.defined() ? state.cache->encoder_padding
                                                                              : key_padding_of(inputs.mask);
    in.token_mask = local_rows(inputs.decoder_mask);
    attention_masks(in, inputs.decoder_input_ids.size(0), inputs.input_ids.size(0), state.cache != nullptr,
                    ctx_.device);
    dec = run_layers(std::max(begin, encoder_layers_), end, dec, in, state);
  }
  if (!part_.has_head(chunk)) return {enc, dec};
  // Encoder-only: the encoder's output (its norm applied where it ended) goes to the output layer.
  torch::Tensor out = encoder_only ? enc : dec;
  if (decoder_norm && !encoder_only) out = decoder_norm->forward(out);
  if (state.hidden_states) state.hidden_states->push_back(out);
  torch::Tensor logits = lm_head ? lm_head->forward(out)
                                 : torch::nn::functional::linear(enter_column_parallel(out, ctx_), shared->weight);
  if (final_logits_bias.defined()) logits = logits + final_logits_bias;  // [t, b, Vp/tp]
  return {logits};
}

}  // namespace foldtron
