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

int64_t Box::numel() const {
  int64_t n = 1;
  for (int64_t s : size) n *= s;
  return n;
}

Box intersect(const Box& a, const Box& b) {
  FT_CHECK(a.offset.size() == b.offset.size(), "boxes of tensors of different ranks");
  Box out{a.offset, a.size};
  for (size_t d = 0; d < a.offset.size(); ++d) {
    const int64_t lo = std::max(a.offset[d], b.offset[d]);
    const int64_t hi = std::min(a.offset[d] + a.size[d], b.offset[d] + b.size[d]);
    out.offset[d] = lo;
    out.size[d] = std::max<int64_t>(hi - lo, 0);
  }
  return out;
}

std::vector<Box> flat_range_boxes(const std::vector<int64_t>& shape, int64_t begin, int64_t end) {
  std::vector<Box> out;
  if (begin >= end) return out;
  if (shape.empty()) return {Box{{}, {}}};
  if (shape.size() == 1) return {Box{{begin}, {end - begin}}};
  const std::vector<int64_t> inner_shape(shape.begin() + 1, shape.end());
  int64_t inner = 1;
  for (int64_t s : inner_shape) inner *= s;
  // Rows of the first dimension: a partial first row, whole rows, a partial last row.
  const auto within_row = [&](int64_t row, int64_t lo, int64_t hi) {
    for (Box box : flat_range_boxes(inner_shape, lo, hi)) {
      box.offset.insert(box.offset.begin(), row);
      box.size.insert(box.size.begin(), 1);
      out.push_back(std::move(box));
    }
  };
  int64_t row = begin / inner;
  const int64_t last_row = end / inner;
  if (row == last_row) {
    within_row(row, begin % inner, end % inner);
    return out;
  }
  if (begin % inner != 0) within_row(row++, begin % inner, inner);
  if (last_row > row) {
    Box whole{std::vector<int64_t>(shape.size(), 0), shape};
    whole.offset[0] = row;
    whole.size[0] = last_row - row;
    out.push_back(std::move(whole));
  }
  if (end % inner != 0) within_row(last_row, 0, end % inner);
  return out;
}

std::vector<GlobalPiece> global_pieces(const torch::Tensor& local, const ParamInfo& info, int64_t begin, int64_t end,
                                       const torch::Tensor& data) {
  const std::vector<int64_t> shape = local.sizes().vec();
  const int64_t count = local.numel();
  if (end < 0) end = count;
  FT_CHECK(begin >= 0 && begin <= end && end <= count, "global_pieces: a range outside the shard");
  const torch::Tensor flat = (data.defined() ? data : local).reshape({-1});
  FT_CHECK(flat.numel() == (data.defined() ? end - begin : count), "global_pieces: data of the wrong size");
  const int64_t base = data.defined() ? begin : 0;
  const int64_t dim = info.tp_split_dim;
  const bool split = dim >= 0 && (info.split_size > 1 || info.padded_rows > 0);
  const int64_t local_rows = dim >= 0 ? shape[static_cast<size_t>(dim)] : 0;
  const int64_t part_rows = split ? local_rows / info.split_parts : 0;  // local rows per fused part
  const int64_t global_part = split ? (local_rows * info.split_size) / info.split_parts : 0;  // padded
  const int64_t global_rows = split ? local_rows * info.split_size - info.padded_rows : 0;
  std::vector<GlobalPiece> out;
  for (const Box& box : flat_range_boxes(shape, begin, end)) {
    int64_t first = 0;  // the box's first element in row-major order
    {
      int64_t stride = 1;
      for (size_t d = shape.size(); d-- > 0;) {
        first += box.offset[d] * stride;
        stride *= shape[d];
      }
    }
    const torch::Tensor view = flat.narrow(0, first - base, box.numel()).view(box.size);
    // Along the split dimension the box may cross fused parts: one global box per part.
    std::vector<std::pair<int64_t, int64_t>> runs;  // local [lo, hi) along dim, within one part
    if (split) {
      int64_t lo = box.offset[static_cast<size_t>(dim)];
      const int64_t hi = lo + box.size[static_cast<size_t>(dim)];
      while (lo < hi) {
        const int64_t part_end = (lo / part_rows + 1) * part_rows;
        runs.emplace_back(lo, std::min(hi, part_end));
        lo = std::min(hi, part_end);
      }
    } else {
      runs.emplace_back(0, 0);
    }
    for (const auto& [lo, hi] : runs) {
      GlobalPiece piece{box, view};
      if (split) {
        const auto d = static_cast<size_t>(dim);
        const int64_t part = lo / part_rows;
        int64_t global_lo = part * global_part + info.split_rank * part_rows + (lo - part * part_rows);
        int64_t rows = hi - lo;
        // Padding rows (a vocabulary padded to a multiple of tp) are no part of the global tensor.
        rows = std::max<int64_t>(std::min(global_lo + rows, global_rows) - global_lo, 0);
        if (rows == 0) continue;
        piece.box.offset[d] = global_lo;
        piece.box.size[d] = rows;
        piece.view = view.narrow(dim, lo - box.offset[d], rows);
      }
      if (info.expert && info.num_experts > 0 && !shape.empty()) piece.box.offset[0] += info.expert_begin;
      out.push_back(std::move(piece));
    }
  }
  return out;
}

std::vector<int64_t> global_shape(const torch::Tensor& shard, const ParamInfo& info) {
  std::vector<int64_t> shape = shard.sizes().vec();
  if (info.tp_split_dim >= 0) {
    auto& size = shape[static_cast<size_t>(info.tp_split_dim)];
    size = size * info.split_size - info.padded_rows;
  }
  if (info.expert && info.num_experts > 0 && !shape.empty()) shape[0] = info.num_experts;
  return shape;
}

}  // namespace foldtron
