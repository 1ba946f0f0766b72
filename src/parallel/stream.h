// Tensors that travel between ranks in declared shapes: what a pipeline stage sends on (a
// decoder-only model: its residual stream; an encoder-decoder: the encoder output and the decoder
// stream). The receiving rank allocates them from the spec before the message arrives.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace foldtron {

struct TensorSpec {
  std::vector<int64_t> shape;
  torch::TensorOptions options;
};
using StreamSpec = std::vector<TensorSpec>;
using TensorList = std::vector<torch::Tensor>;

// A spec as text for messages: "[2, 1, 64] float, [4, 1, 64] float".
std::string spec_text(const StreamSpec& spec);

}  // namespace foldtron
