// Pipeline parallelism's stage split: which layers each pipeline rank builds. The model's L layers
// (an encoder-decoder counts its encoder layers first, then its decoder layers) are cut into
// pp*vpp chunks in order, evenly or as parallel.pipeline_layers says; global chunk c = v*pp + r is
// local chunk v of pp rank r. The first chunk also holds the embedding, the last the output layer.
#pragma once

#include <cstdint>
#include <vector>

namespace foldtron {

struct ParallelConfig;

struct ModelPart {
  int64_t pp = 1, vpp = 1, pp_rank = 0;
  std::vector<int64_t> chunk_begin;  // first layer of each global chunk, then num_layers

  static ModelPart whole(int64_t num_layers) { return {1, 1, 0, {0, num_layers}}; }
  static ModelPart of(const ParallelConfig& parallel, int64_t num_layers, int64_t pp_rank);
  int64_t num_layers() const { return chunk_begin.back(); }
  int64_t num_chunks() const { return vpp; }  // local chunks
  int64_t global_chunk(int64_t chunk) const { return chunk * pp + pp_rank; }
  bool has_embedding(int64_t chunk) const { return global_chunk(chunk) == 0; }
  bool has_head(int64_t chunk) const { return global_chunk(chunk) == pp * vpp - 1; }
  bool is_first_stage() const { return pp_rank == 0; }
  bool is_last_stage() const { return pp_rank == pp - 1; }
  int64_t pp_rank_of_layer(int64_t layer) const;  // the pp rank holding global layer `layer`
  int64_t begin(int64_t chunk) const { return chunk_begin[static_cast<size_t>(global_chunk(chunk))]; }
  int64_t end(int64_t chunk) const { return chunk_begin[static_cast<size_t>(global_chunk(chunk)) + 1]; }
  bool holds_layer(int64_t layer) const;  // in one of this rank's chunks
};

}  // namespace foldtron
