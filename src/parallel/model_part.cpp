// Pipeline stage split (see model_part.h).
#include "parallel/model_part.h"

#include <algorithm>

#include <fmt/format.h>

#include "config/config.h"
#include "core/errors.h"

namespace foldtron {

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

bool ModelPart::holds_layer(int64_t layer) const {
  for (int64_t chunk = 0; chunk < num_chunks(); ++chunk) {
    if (layer >= begin(chunk) && layer < end(chunk)) return true;
  }
  return false;
}

}  // namespace foldtron
