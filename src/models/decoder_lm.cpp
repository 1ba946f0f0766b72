// Decoder-only language model (see decoder_lm.h).
#include "models/decoder_lm.h"

#include <algorithm>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "layers/recompute.h"
#include "parallel/communicator.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"

namespace foldtron {

DecoderLayer::DecoderLayer(const LayerContext& ctx, int64_t index, const ModelConfig& model, const MoEConfig& moe_config)
    : ctx_(ctx), dropout_(model.hidden_dropout) {
  const std::string name = fmt::format("model.layers.{}", index);
  input_layernorm = register_module("input_layernorm",
                                    std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps));
  self_attn = register_module("self_attn", std::make_shared<Attention>(ctx, name + ".self_attn", model));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps));
  if (moe_config.is_moe_layer(index)) {
    moe = register_module("mlp", std::make_shared<MoELayer>(ctx, name + ".mlp", model, moe_config));
  } else {
    mlp = register_module("mlp", std::make_shared<Mlp>(ctx, name + ".mlp", model.hidden_size, model.ffn_hidden_size,
                                                       model.activation, model.init_std));
  }
}

torch::Tensor DecoderLayer::forward(const torch::Tensor& x, const torch::Tensor& positions) {
  // With sequence parallelism the residual stream is split over tp, so its dropout differs per
  // tp rank (model-parallel stream); otherwise it is replicated and drops alike (data stream).
  const RngStream stream = ctx_.sequence_parallel ? RngStream::kModelParallel : RngStream::kData;
  auto drop = [&](const torch::Tensor& t) {
    return is_training() && dropout_ > 0 ? ctx_.rng->dropout(t, dropout_, stream) : t;
  };
  torch::Tensor h = x + drop(self_attn->forward(input_layernorm->forward(x), positions));  // [s(/tp), b, h]
  const torch::Tensor normed = post_attention_layernorm->forward(h);
  return h + drop(moe ? moe->forward(normed) : mlp->forward(normed));
}

ModelPart ModelPart::of(const ParallelConfig& parallel, int64_t num_layers, int64_t pp_rank) {
  ModelPart part{parallel.pp, parallel.vpp, pp_rank, {0}};
  const int64_t chunks = parallel.pp * parallel.vpp;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t count = parallel.pipeline_layers.empty() ? num_layers / chunks
                                                           : parallel.pipeline_layers[static_cast<size_t>(c)];
    part.chunk_begin.push_back(part.chunk_begin.back() + count);
  }
  FT_CHECK(part.chunk_begin.back() == num_layers, "pipeline chunks must cover every layer (validated)");
  return part;
}

int64_t ModelPart::pp_rank_of_layer(int64_t layer) const {
  const auto next = std::upper_bound(chunk_begin.begin(), chunk_begin.end(), layer);
  FT_CHECK(layer >= 0 && next != chunk_begin.end(), fmt::format("no layer {} in the pipeline chunks", layer));
  return (next - chunk_begin.begin() - 1) % pp;
}

DecoderLM::DecoderLM(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe, ModelPart part)
    : ctx_(ctx), part_(part.chunk_begin.empty() ? ModelPart::whole(model.num_layers) : std::move(part)),
      vocab_size_(model.vocab_size), hidden_size_(model.hidden_size),
      recompute_full_(model.recompute == Recompute::kFull), recompute_num_layers_(model.recompute_num_layers) {
  const bool first = part_.has_embedding(0), last = part_.has_head(part_.num_chunks() - 1);
  const bool tied_across_stages = model.tie_embeddings && part_.pp > 1;
  if (first || (last && model.tie_embeddings)) {
    embed_tokens = register_module("embed_tokens", std::make_shared<VocabParallelEmbedding>(
                                                       ctx, "model.embed_tokens", model.vocab_size, model.hidden_size,
                                                       model.init_std));
    if (tied_across_stages && ctx.registry) {
      ParamInfo info = ctx.registry->info(embed_tokens->weight);
      info.stage_tied = true;
      ctx.registry->add(embed_tokens->weight, info);
    }
  }
  // Named by global index ("layers.<i>."), whichever of them this rank holds.
  auto stack = register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t chunk = 0; chunk < part_.num_chunks(); ++chunk) {
    for (int64_t i = part_.begin(chunk); i < part_.end(chunk); ++i) {
      layers.push_back(stack->register_module(std::to_string(i), std::make_shared<DecoderLayer>(ctx, i, model, moe)));
      layer_index_.push_back(i);
    }
  }
  if (last) {
    norm = register_module("norm", std::make_shared<Norm>(ctx, model.normalization, model.hidden_size, model.norm_eps));
    if (!model.tie_embeddings) {
      lm_head = register_module("lm_head", std::make_shared<ColumnParallelLinear>(
                                               ctx, "lm_head", model.hidden_size, model.vocab_size, false, model.init_std));
    }
  }
}

std::vector<int64_t> DecoderLM::stream_shape(int64_t seq, int64_t batch) const {
  const int64_t cp = ctx_.groups ? ctx_.groups->cp().size() : 1;
  return {seq / cp / (ctx_.sequence_parallel ? ctx_.tp_size() : 1), batch, hidden_size_};
}

torch::TensorOptions DecoderLM::stream_options() const {
  return torch::TensorOptions().dtype(ctx_.dtype).device(ctx_.device);
}

std::shared_ptr<DecoderLayer>& DecoderLM::layer(int64_t index) {
  const auto it = std::find(layer_index_.begin(), layer_index_.end(), index);
  FT_CHECK(it != layer_index_.end(), fmt::format("layer {} is not on this pipeline stage", index));
  return layers[static_cast<size_t>(it - layer_index_.begin())];
}

torch::Tensor DecoderLM::forward_chunk(int64_t chunk, const torch::Tensor& input, const torch::Tensor& positions,
                                       std::vector<torch::Tensor>* hidden_states) {
  FT_CHECK(chunk >= 0 && chunk < part_.num_chunks(), fmt::format("no local pipeline chunk {}", chunk));
  torch::Tensor x = part_.has_embedding(chunk) ? embed_tokens->forward(input) : input;  // [s(/tp), b, h]
  const int64_t begin = part_.begin(chunk), end = part_.end(chunk);
  if (recompute_full_ && is_training() && !hidden_states) {
    // Full recomputation: blocks of recompute_num_layers layers keep only their input.
    for (int64_t block = begin; block < end; block += recompute_num_layers_) {
      const int64_t block_end = std::min(block + recompute_num_layers_, end);
      x = checkpoint(
          [this, block, block_end](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
            torch::Tensor y = in[0];
            for (int64_t l = block; l < block_end; ++l) y = layer(l)->forward(y, in[1]);
            return {y};
          },
          {x, positions}, ctx_.rng)[0];
    }
  } else {
    for (int64_t l = begin; l < end; ++l) {
      if (hidden_states) hidden_states->push_back(x);
      x = layer(l)->forward(x, positions);
    }
  }
  if (!part_.has_head(chunk)) return x;
  x = norm->forward(x);
  if (hidden_states) hidden_states->push_back(x);
  // The output layer gathers the sequence (SP) and returns this rank's vocabulary shard.
  if (lm_head) return lm_head->forward(x);  // [s, b, V/tp]
  return torch::nn::functional::linear(enter_column_parallel(x, ctx_), embed_tokens->weight);  // tied: [V/tp, h]
}

torch::Tensor DecoderLM::logits(const torch::Tensor& ids, std::vector<torch::Tensor>* hidden_states,
                                const torch::Tensor& token_positions) {
  FT_CHECK(part_.pp == 1, "logits() runs the whole model; with pipeline parallelism run forward_chunk per stage");
  const torch::Tensor positions =
      token_positions.defined()
          ? token_positions
          : torch::arange(ids.size(0), torch::TensorOptions().dtype(torch::kLong).device(ids.device()));
  return forward_chunk(0, ids, positions, hidden_states);
}

std::vector<std::shared_ptr<MoELayer>> DecoderLM::moe_layers(int64_t chunk) const {
  std::vector<std::shared_ptr<MoELayer>> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const bool in_chunk = chunk < 0 || (layer_index_[i] >= part_.begin(chunk) && layer_index_[i] < part_.end(chunk));
    if (in_chunk && layers[i]->moe) out.push_back(layers[i]->moe);
  }
  return out;
}

void DecoderLM::set_router_loss_scale(double scale) {
  for (const auto& layer : moe_layers()) layer->set_router_loss_scale(scale);
}

RouterLosses DecoderLM::router_losses(int64_t chunk) const {
  RouterLosses total;
  auto add = [](torch::Tensor& sum, const torch::Tensor& term) {
    if (term.defined()) sum = sum.defined() ? sum + term : term;
  };
  for (const auto& layer : moe_layers(chunk)) {
    add(total.load_balancing, layer->gate->losses().load_balancing);
    add(total.z_loss, layer->gate->losses().z_loss);
  }
  return total;
}

torch::Tensor DecoderLM::token_losses(const torch::Tensor& ids, const torch::Tensor& targets,
                                      const torch::Tensor& positions) {
  return vocab_parallel_cross_entropy(logits(ids, nullptr, positions), targets, *ctx_.tp);  // [s, b]
}

}  // namespace foldtron
