// Sharding metadata: which slice of which global tensor a rank holds. Layers record each
// parameter's layout here when they build it; gradient reduction, the optimizer, checkpoints and
// the equivalence tests read it. Also the seam through which the optimizer's buffers let a layer
// write a weight gradient straight into its fp32 main gradient (gradient-accumulation fusion).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include <torch/types.h>

namespace foldtron {

// How a parameter is laid out. Dense parameters are split over tp (or replicated) and hold the
// same values on every dp x cp rank; expert parameters hold experts
// [expert_begin, expert_begin + size(0)) of their layer (split over ep), are split over etp, and
// hold the same values on every edp rank.
struct ParamInfo {
  int64_t tp_split_dim = -1;       // dimension split over tp (etp for experts); -1: replicated
  bool sequence_parallel = false;  // replicated, but fed only this rank's tokens: its gradient
                                   // must be summed over tp
  int64_t split_parts = 1;         // the split dimension holds this many fused blocks (gate|up),
                                   // each split on its own
  int64_t split_rank = 0, split_size = 1;  // this rank's place in the group it is split over
  bool expert = false;
  int64_t expert_begin = 0;
  int64_t num_experts = 0;  // a stack of experts (dim 0 of the global tensor holds all of them)
  bool stage_tied = false;  // the tied embedding/output weight, held by both the first and the last
                            // pipeline stage: its gradients are summed between them
  int64_t padded_rows = 0;  // rows of the split dimension beyond the global tensor (a vocabulary
                            // padded to a multiple of tp): zero, never trained, never saved
};

// Where the optimizer keeps a 16-bit parameter's main gradient (fp32, or bf16 with
// train.main_grads_dtype), for layers that compute that parameter's weight gradient themselves
// (Megatron's gradient_accumulation_fusion). The optimizer's buffers implement it; layers see only
// this interface.
class MainGradWriter {
 public:
  virtual ~MainGradWriter() = default;
  // When `param` has a main gradient that may be written now, calls
  // write(main_grad, accumulate) — overwrite it when `accumulate` is false, add to it otherwise —
  // and returns true: the layer then hands autograd an uninitialized placeholder of the
  // parameter's shape, which the buffers drop. Such a parameter must get no other gradient in the
  // same backward. Returns false (nothing called) otherwise.
  virtual bool write_main_grad(const torch::Tensor& param,
                               const std::function<void(const torch::Tensor& main_grad, bool accumulate)>& write) = 0;
  // The dtype of the main gradients it hands out: fp32, or the parameters' own 16-bit dtype.
  virtual torch::ScalarType main_grad_dtype() const = 0;
};

class ParamRegistry {
 public:
  void add(const torch::Tensor& param, ParamInfo info) { infos_[param.unsafeGetTensorImpl()] = info; }
  bool has(const torch::Tensor& param) const { return infos_.count(param.unsafeGetTensorImpl()) > 0; }
  // The info of a registered parameter; replicated when unknown.
  ParamInfo info(const torch::Tensor& param) const {
    const auto it = infos_.find(param.unsafeGetTensorImpl());
    return it == infos_.end() ? ParamInfo{} : it->second;
  }
  // The optimizer's buffers register themselves while they exist (null: none).
  void set_main_grad_writer(MainGradWriter* writer) { writer_ = writer; }
  MainGradWriter* main_grad_writer() const { return writer_; }

 private:
  std::map<const c10::TensorImpl*, ParamInfo> infos_;
  MainGradWriter* writer_ = nullptr;
};

// This rank's slice of `full` as `info` describes it (split_parts blocks of `tp_split_dim`, each
// chunked split_size ways, after padding the dimension by padded_rows zero rows); `full` itself
// when replicated. Experts: `full` holds this rank's experts only.
torch::Tensor shard_of(const torch::Tensor& full, const ParamInfo& info);
// The inverse: the global tensor from every rank's `shards` (in split-rank order), padding rows
// removed.
torch::Tensor unshard(const std::vector<torch::Tensor>& shards, const ParamInfo& info);
// The global shape of a parameter from its shard (a stack of experts: all of them).
std::vector<int64_t> global_shape(const torch::Tensor& shard, const ParamInfo& info);

// A box of a tensor: the elements [offset[d], offset[d] + size[d]) along every dimension d.
struct Box {
  std::vector<int64_t> offset, size;
  int64_t numel() const;
  bool empty() const { return numel() == 0; }
};
// The overlap of two boxes (empty when they do not meet).
Box intersect(const Box& a, const Box& b);

// A part of a rank's shard as a box of the global tensor, with the shard's elements of it (a view,
// possibly strided).
struct GlobalPiece {
  Box box;             // of the global tensor (experts: of all experts; vocabulary padding excluded)
  torch::Tensor view;  // [box.size...]
};
// The boxes of a tensor of `shape` that together hold its elements [begin, end) in row-major
// order, each covering a contiguous run of that order, in order (at most ~2 per dimension).
std::vector<Box> flat_range_boxes(const std::vector<int64_t>& shape, int64_t begin, int64_t end);
// Where the elements [begin, end) (row-major) of this rank's shard `local` sit in the global
// tensor, as `info` describes the split, each with its view of `data`: a tensor holding those
// elements contiguously ([end - begin], e.g. an optimizer state segment; `local` itself for the
// whole shard when undefined). Padding rows are left out.
std::vector<GlobalPiece> global_pieces(const torch::Tensor& local, const ParamInfo& info, int64_t begin = 0,
                                       int64_t end = -1, const torch::Tensor& data = {});

}  // namespace foldtron
