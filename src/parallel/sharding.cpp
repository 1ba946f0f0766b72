// Sharding metadata (see sharding.h).
#include "parallel/sharding.h"

#include <torch/torch.h>

#include "core/errors.h"

namespace foldtron {

torch::Tensor shard_of(const torch::Tensor& full, const ParamInfo& info) {
  if (info.tp_split_dim < 0) return full;
  const int64_t dim = info.tp_split_dim;
  torch::Tensor padded = full;
  if (info.padded_rows > 0) {
    std::vector<int64_t> shape = full.sizes().vec();
    shape[static_cast<size_t>(dim)] = info.padded_rows;
    padded = torch::cat({full, torch::zeros(shape, full.options())}, dim);
  }
  if (info.split_size == 1) return padded;
  FT_CHECK(padded.size(dim) % (info.split_parts * info.split_size) == 0, "parameter dimension does not split");
  std::vector<torch::Tensor> pieces;
  for (const torch::Tensor& part : padded.chunk(info.split_parts, dim)) {
    pieces.push_back(part.chunk(info.split_size, dim)[info.split_rank]);
  }
  return pieces.size() == 1 ? pieces.front() : torch::cat(pieces, dim);
}

torch::Tensor unshard(const std::vector<torch::Tensor>& shards, const ParamInfo& info) {
  if (info.tp_split_dim < 0) return shards.front();
  const int64_t dim = info.tp_split_dim;
  torch::Tensor full;
  if (shards.size() == 1) {
    full = shards.front();
  } else {
    std::vector<torch::Tensor> parts;  // part p = cat over ranks of each rank's p-th block
    for (int64_t p = 0; p < info.split_parts; ++p) {
      std::vector<torch::Tensor> blocks;
      for (const torch::Tensor& shard : shards) blocks.push_back(shard.chunk(info.split_parts, dim)[p]);
      parts.push_back(torch::cat(blocks, dim));
    }
    full = torch::cat(parts, dim);
  }
  return info.padded_rows > 0 ? full.narrow(dim, 0, full.size(dim) - info.padded_rows) : full;
}

std::vector<int64_t> global_shape(const torch::Tensor& shard, const ParamInfo& info) {
  std::vector<int64_t> shape = shard.sizes().vec();
  if (info.tp_split_dim >= 0) {
    auto& size = shape[static_cast<size_t>(info.tp_split_dim)];
    size = size * info.split_size - info.padded_rows;
  }
  return shape;
}

}  // namespace foldtron
