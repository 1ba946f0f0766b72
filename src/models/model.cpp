// The Model interface's shared parts (see model.h).
#include "models/model.h"

#include <algorithm>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "layers/recompute.h"
#include "moe/moe_layer.h"
#include "parallel/rng.h"

namespace foldtron {

torch::Tensor key_padding_of(const torch::Tensor& mask) {
  return mask.defined() ? mask.t().to(torch::kBool) : mask;
}

TransformerLayerOptions transformer_layer_options(const ModelConfig& model) {
  TransformerLayerOptions options;
  options.norm_position = model.norm_position;
  options.normalization = model.normalization;
  options.hidden = model.hidden_size;
  options.norm_eps = model.norm_eps;
  options.dropout = model.hidden_dropout;
  AttentionOptions& attention = options.attention;
  attention.hidden = model.hidden_size;
  attention.heads = model.num_attention_heads;
  attention.groups = model.num_query_groups;
  attention.head_dim = model.kv_channels();
  attention.qkv_bias = model.qkv_bias || model.linear_bias;
  attention.out_bias = model.linear_bias;
  attention.qk_norm = model.qk_norm;
  attention.norm_eps = model.norm_eps;
  attention.rope_theta = model.position_embedding == PositionKind::kRotary ? model.rope_theta : 0.0;
  attention.dropout = model.attention_dropout;
  attention.recompute = model.recompute_core_attn();
  attention.init_std = model.init_std;
  return options;
}

std::shared_ptr<FeedForward> feed_forward(const LayerContext& ctx, const std::string& name, int64_t index,
                                          const ModelConfig& model, const MoEConfig& moe) {
  if (moe.is_moe_layer(index)) return std::make_shared<MoELayer>(ctx, name, model, moe);
  return std::make_shared<Mlp>(ctx, name, model.hidden_size, model.ffn_hidden_size, model.activation,
                               model.linear_bias, model.init_std);
}

void tie_across_stages(const LayerContext& ctx, const torch::Tensor& weight) {
  ParamInfo info = ctx.registry->info(weight);
  info.stage_tied = true;
  ctx.registry->add(weight, info);
}

Model::Model(const LayerContext& ctx, ModelPart part, std::shared_ptr<ParamRegistry> registry,
             std::shared_ptr<RngTracker> rng)
    : ctx_(ctx), part_(std::move(part)), registry_(std::move(registry)), rng_(std::move(rng)) {}

torch::Tensor Model::logits(const ModelInputs& inputs, ForwardState& state) {
  FT_CHECK(part_.pp == 1, "logits() runs the whole model; with pipeline parallelism run forward_chunk per stage");
  return forward_chunk(0, inputs, {}, state).at(0);
}

void Model::add_layer(int64_t index, std::shared_ptr<TransformerLayer> layer) {
  layers_.emplace_back(index, std::move(layer));
}

TransformerLayer& Model::layer(int64_t index) const {
  for (const auto& [i, layer] : layers_) {
    if (i == index) return *layer;
  }
  throw InternalError(fmt::format("layer {} is not on this pipeline stage", index));
}

torch::Tensor Model::local_rows(const torch::Tensor& x) const {
  if (!x.defined() || !ctx_.sp()) return x;
  const int64_t rows = x.size(0) / ctx_.tp_size();
  return x.narrow(0, ctx_.tp_rank() * rows, rows);
}

torch::Tensor Model::run_layers(int64_t begin, int64_t end, torch::Tensor x, const LayerInputs& in,
                                ForwardState& state) {
  if (recompute_ != Recompute::kFull || !is_training() || state.hidden_states || state.cache) {
    for (int64_t l = begin; l < end; ++l) {
      if (state.hidden_states) state.hidden_states->push_back(x);
      x = layer(l).forward(x, in, state);
    }
    return x;
  }
  // Full recomputation: blocks of recompute_num_layers layers keep only their input (and the
  // encoder's output, an input of cross-attention: through the block's inputs, so its gradient
  // leaves each recomputation instead of reaching into the encoder's graph from inside it). The
  // recomputation in backward collects nothing (its router losses were counted in forward).
  ForwardState* outer = &state;
  std::vector<torch::Tensor> inputs{x};
  if (in.memory.defined()) inputs.push_back(in.memory);
  for (int64_t block = begin; block < end; block += recompute_num_layers_) {
    const int64_t block_end = std::min(block + recompute_num_layers_, end);
    inputs[0] = checkpoint(
        [this, block, block_end, in, outer](const std::vector<torch::Tensor>& input) -> std::vector<torch::Tensor> {
          ForwardState scratch;
          ForwardState& s = recomputing() ? scratch : *outer;
          LayerInputs block_in = in;
          if (input.size() > 1) block_in.memory = input[1];
          torch::Tensor y = input[0];
          for (int64_t l = block; l < block_end; ++l) y = layer(l).forward(y, block_in, s);
          return {y};
        },
        inputs, ctx_.rng)[0];
  }
  return inputs[0];
}

int64_t Model::num_hidden_states() const {
  const int64_t encoder = encoder_layers(), decoder = part_.num_layers() - encoder;
  return (encoder > 0 ? encoder + 1 : 0) + decoder + 1;
}

int64_t Model::hidden_state_owner(int64_t index) const {
  const int64_t encoder = encoder_layers(), total = part_.num_layers();
  int64_t layer_index;
  if (encoder > 0 && index <= encoder) {
    layer_index = std::min(index, encoder - 1);  // before encoder layer `index`, or the encoder's output
  } else {
    const int64_t j = index - (encoder > 0 ? encoder + 1 : 0);
    layer_index = std::min(encoder + j, total - 1);
  }
  return part_.pp_rank_of_layer(layer_index);
}

std::vector<std::shared_ptr<MoELayer>> Model::moe_layers() const {
  std::vector<std::shared_ptr<MoELayer>> out;
  for (const auto& [index, layer] : layers_) {
    if (auto moe = std::dynamic_pointer_cast<MoELayer>(layer->mlp)) out.push_back(moe);
  }
  return out;
}

void Model::set_router_loss_scale(double scale) {
  for (const auto& layer : moe_layers()) layer->set_router_loss_scale(scale);
}

}  // namespace foldtron
