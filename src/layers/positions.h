// Absolute position embeddings added to the token embeddings (encoder-decoder models; decoder-only
// models rotate q and k instead, layers/attention.h):
//   sinusoidal  fixed, Marian's layout: for i < h/2, column i = sin(p / 10000^(2i/h)) and column
//               h/2 + i = cos(the same angle), positions from 0 (computed in fp64, as Hugging Face
//               does, then rounded to the parameters' dtype); not a parameter
//   learned     a table [max_positions, h] (XLM), replicated over tp; with sequence parallelism a
//               rank looks up only its own positions, so the gradient is summed over tp
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/context.h"

namespace foldtron {

// The sinusoidal table [positions, hidden] in Marian's layout, fp64.
torch::Tensor sinusoidal_table(int64_t positions, int64_t hidden);

class PositionEmbedding : public torch::nn::Module {
 public:
  PositionEmbedding(const LayerContext& ctx, const std::string& name, PositionKind kind, int64_t max_positions,
                    int64_t hidden, double init_std);
  // positions [s] or [s, b] int64 -> [s, 1, h] or [s, b, h], to add to the embeddings.
  torch::Tensor forward(const torch::Tensor& positions);

  torch::Tensor weight;  // [max_positions, h]: a parameter (learned) or a buffer (sinusoidal)

 private:
  int64_t max_positions_;
};

}  // namespace foldtron
