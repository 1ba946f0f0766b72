// Absolute position embeddings (see positions.h).
#include "layers/positions.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"

namespace foldtron {

torch::Tensor sinusoidal_table(int64_t positions, int64_t hidden) {
  const auto options = torch::TensorOptions().dtype(torch::kDouble);
  const int64_t half = hidden / 2, sines = (hidden + 1) / 2;
  const torch::Tensor p = torch::arange(positions, options).unsqueeze(1);                     // [P, 1]
  const torch::Tensor j = torch::arange(hidden, options);                                     // [h]
  const torch::Tensor angle = p / torch::pow(10000.0, 2.0 * torch::floor(j / 2.0) / hidden);  // [P, h]
  // Even columns' angles give the sines, odd columns' the cosines (the same frequencies).
  torch::Tensor table = torch::empty({positions, hidden}, options);
  table.narrow(1, 0, sines).copy_(angle.index({torch::indexing::Slice(), torch::indexing::Slice(0, hidden, 2)}).sin());
  table.narrow(1, sines, half).copy_(angle.index({torch::indexing::Slice(), torch::indexing::Slice(1, hidden, 2)}).cos());
  return table;
}

PositionEmbedding::PositionEmbedding(const LayerContext& ctx, const std::string& name, PositionKind kind,
                                     int64_t max_positions, int64_t hidden, double init_std)
    : max_positions_(max_positions) {
  FT_CHECK(kind == PositionKind::kLearned || kind == PositionKind::kSinusoidal,
           "PositionEmbedding is for learned or sinusoidal positions");
  if (kind == PositionKind::kLearned) {
    weight = register_parameter(
        "weight", replicated_param(ctx, full_normal(ctx, name + ".weight", {max_positions, hidden}, init_std),
                                   ctx.sequence_parallel));
  } else {
    weight = register_buffer("weight", sinusoidal_table(max_positions, hidden).to(ctx.device, ctx.dtype));
  }
}

torch::Tensor PositionEmbedding::forward(const torch::Tensor& positions) {
  if (positions.numel() > 0) {
    const int64_t last = positions.max().item<int64_t>();
    if (last >= max_positions_) {
      throw DataError(fmt::format("position {} is beyond the model's {} positions", last, max_positions_),
                      "shorten the sequences (or raise model.max_position_embeddings before training)");
    }
  }
  const torch::Tensor table = torch::embedding(weight, positions);  // [s, h] or [s, b, h]
  return positions.dim() == 1 ? table.unsqueeze(1) : table;
}

}  // namespace foldtron
