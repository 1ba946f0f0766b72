// Flat parameter and gradient buffers with bucketed gradient reduction overlapped with backward,
// and the shard of each bucket this rank's optimizer owns (plain or distributed optimizer).
//
// Layout: parameters are grouped by kind (dense: the same values on every dp x cp rank; experts:
// on every edp rank) and dtype, and laid out in reverse registration order (roughly the order in
// which backward produces their gradients) in two flat buffers per group: one in the parameters'
// dtype, which the parameters become views of, and one of main gradients (fp32; for 16-bit
// parameters `grad_dtype`, which may be their own dtype: Megatron's --main-grads-dtype). Each group
// is cut into buckets of about `bucket_bytes` of gradient, each padded to a multiple of the
// reduction group's size (dense: dp_cp, experts: edp).
//
// Gradients: an fp32 parameter's .grad is its view of the gradient buffer (autograd adds into it
// in place); a 16-bit parameter's gradient is added into the buffer by a hook on its gradient
// accumulator and then freed, so accumulation over micro-batches is in the main gradients' dtype
// and the 16-bit copy lives only until it is added (the step's first one is copied, so these buffers
// need no zeroing). The reductions run in that dtype too.
// Layers may also write a 16-bit parameter's gradient into its buffer themselves: with
// `fuse_wgrad` the buffers register as the registry's MainGradWriter (parallel/sharding.h), and the
// hook then only drops autograd's placeholder.
//
// Reduction: with sync on (the last micro-batch), a bucket is reduced as soon as all of its
// gradients are in, asynchronously, while backward goes on. Buckets start strictly in bucket
// order on every rank, so every group sees the same sequence of collectives; a bucket whose
// gradients never all arrive starts in finish_grad_sync(), which waits for all and then sums the
// gradients of sequence-parallel parameters over tp.
//   - plain: all-reduce; every rank holds whole reduced gradients and updates every element;
//   - shard (distributed optimizer, ZeRO-1): reduce-scatter; rank r of the group holds the
//     reduced r-th 1/size of every bucket, the optimizer keeps state for that part only, and
//     gather_params() all-gathers the updated parameters.
// A parameter held by the first and the last pipeline stage (ParamInfo::stage_tied: the tied
// embedding) gets a buffer of its own, laid out alike on both, and finish_grad_sync() adds the
// other stage's reduced gradient to it, so both copies take the same update.
// Gradients are sums: losses are already scaled by the global token count.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "parallel/sharding.h"

namespace foldtron {

class Communicator;
class ProcessGroups;

struct BufferOptions {
  int64_t bucket_bytes = int64_t{40} << 20;  // gradient bytes per bucket
  bool shard = false;    // distributed optimizer: reduce-scatter, this rank updates its shard
  bool overlap = true;   // reduce buckets during backward; false: all after it
  // Offer layers the 16-bit parameters' main gradients (gradient-accumulation fusion): the
  // buffers are the registry's MainGradWriter until they go.
  bool fuse_wgrad = true;
  // The main gradients of 16-bit parameters: fp32, or bf16 (for bf16 parameters only). fp32
  // parameters always have fp32 gradients.
  torch::ScalarType grad_dtype = torch::kFloat;
};

// The elements of one parameter inside this rank's shard.
struct ShardSegment {
  torch::Tensor param;  // the model's parameter (as registered)
  torch::Tensor grad;   // its main gradient elements (view of the gradient buffer)
  torch::Tensor value;  // the same elements of the parameter (view of the parameter buffer)
  int64_t buffer = 0;   // which buffer group
  int64_t shard_offset = 0;  // offset in this rank's shard of that group (optimizer state)
  int64_t param_begin = 0;   // the first of the parameter's elements it holds (row-major)
};

// A bucket's part of this rank's shard: contiguous in both buffers and in the shard.
struct ShardChunk {
  torch::Tensor grad, value;  // views of the gradient and parameter buffers
  int64_t buffer = 0;
  int64_t shard_offset = 0;
};

class ParamBuffers : public MainGradWriter {
 public:
  ParamBuffers(const std::vector<torch::Tensor>& params, ParamRegistry& registry, ProcessGroups& groups,
               BufferOptions options = {});
  ~ParamBuffers() override;
  ParamBuffers(const ParamBuffers&) = delete;
  ParamBuffers& operator=(const ParamBuffers&) = delete;

  // Before a step's first backward: zero gradients, no bucket pending.
  void zero_grads();
  // Whether the next backward is the step's last (buckets reduce as they complete). Off for
  // the earlier micro-batches of gradient accumulation.
  void set_sync(bool sync) { sync_ = sync; }
  // After the last backward: every bucket reduced and waited for, sequence-parallel gradients
  // summed over tp, stage-tied gradients summed between the first and last pipeline stage. The
  // shard's gradients (whole gradients without `shard`) are then final.
  void finish_grad_sync();
  // After the optimizer wrote its shard's values: every rank's parameters updated (all-gather
  // with `shard`; nothing to do without).
  void gather_params();
  // With `shard`: every rank's reduced gradient shards all-gathered, so main_grad() of every
  // parameter is the reduced gradient everywhere (checks and diagnostics; training does not need
  // it). Nothing to do without.
  void gather_grads();

  bool sharded() const { return options_.shard; }
  int64_t num_buffers() const;
  bool buffer_is_expert(int64_t buffer) const;
  int64_t shard_numel(int64_t buffer) const;
  const std::vector<ShardSegment>& segments() const { return segments_; }
  const std::vector<ShardChunk>& chunks() const { return chunks_; }
  // The main gradient of `param` (whole; outside this rank's shard it is not reduced).
  torch::Tensor main_grad(const torch::Tensor& param) const;
  int64_t num_buckets() const;
  // Buckets that started reducing during the last backward (before finish_grad_sync).
  int64_t buckets_started_in_backward() const { return started_in_backward_; }
  // Bytes of the gradient buffers on this rank.
  int64_t grad_bytes() const;

  bool write_main_grad(const torch::Tensor& param,
                       const std::function<void(const torch::Tensor& main_grad, bool accumulate)>& write) override;
  torch::ScalarType main_grad_dtype() const override { return options_.grad_dtype; }

 private:
  struct MainGradSlot;
  struct Entry;
  struct Bucket;
  struct Buffer;
  class Hook;

  void on_grad_ready(size_t entry);
  void gather_shards(bool values);  // the parameters' or the gradients' shards
  void start_ready_buckets(bool all);
  void start_bucket(Bucket& bucket);
  void sum_stage_tied_grads();

  BufferOptions options_;
  ProcessGroups& groups_;
  ParamRegistry& registry_;  // outlives the buffers; their MainGradWriter while they live
  std::vector<Buffer> buffers_;
  std::vector<Entry> entries_;
  std::map<const c10::TensorImpl*, size_t> entry_of_;  // parameter -> its entry
  std::vector<Bucket> buckets_;
  std::vector<ShardSegment> segments_;
  std::vector<ShardChunk> chunks_;
  std::vector<torch::Tensor> sequence_parallel_grads_;
  bool sync_ = true;
  size_t next_bucket_ = 0;  // buckets start in order: the first not started yet
  int64_t started_in_backward_ = 0;
};

}  // namespace foldtron
