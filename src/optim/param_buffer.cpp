// Parameter and gradient buffers with overlapped, bucketed reduction (see param_buffer.h).
#include "optim/param_buffer.h"

#include <map>
#include <tuple>

#include <fmt/format.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/torch_compat.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace {

// Parameters start at multiples of this many elements (aligned vector loads), and buckets span
// multiples of it times the group size.
constexpr int64_t kAlign = 64;

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// A 16-bit gradient into its buffer view. Widening to fp32 on CUDA, the multi-tensor copy is
// vectorized while copy_ converts element by element: 1.74 against 2.66 ms for one layer's expert
// gradient on an H200 (docs/performance.md).
void copy_grad(torch::Tensor& into, const torch::Tensor& from) {
  if (torch_compat::has_foreach_copy() && into.is_cuda() && into.scalar_type() != from.scalar_type()) {
    torch_compat::foreach_copy({into}, {from});
    return;
  }
  into.copy_(from);
}

// `tensors` all-reduced over `group` in flat messages of up to `bucket_bytes`, all in flight
// together, and copied back as they complete.
void all_reduce_packed(const std::vector<torch::Tensor>& tensors, Communicator& group, int64_t bucket_bytes) {
  std::vector<std::vector<torch::Tensor>> packs;
  int64_t bytes = bucket_bytes;
  for (const torch::Tensor& t : tensors) {
    const int64_t size = t.numel() * t.element_size();
    if (packs.empty() || bytes + size > bucket_bytes) {
      packs.emplace_back();
      bytes = 0;
    }
    packs.back().push_back(t);
    bytes += size;
  }
  std::vector<torch::Tensor> flats;
  std::vector<WorkPtr> works;
  for (const auto& pack : packs) {
    std::vector<torch::Tensor> pieces;
    for (const torch::Tensor& t : pack) pieces.push_back(t.reshape({-1}));
    flats.push_back(torch::cat(pieces));
    works.push_back(group.all_reduce_async(flats.back()));
  }
  for (size_t p = 0; p < packs.size(); ++p) {
    works[p]->wait();
    int64_t offset = 0;
    for (const torch::Tensor& t : packs[p]) {
      t.view({-1}).copy_(flats[p].narrow(0, offset, t.numel()));
      offset += t.numel();
    }
  }
}

}  // namespace

// A 16-bit parameter's main gradient and what this step did with it.
struct ParamBuffers::MainGradSlot {
  bool written = false;    // holds a gradient of this step (else stale values)
  bool fused = false;      // written by a layer in this backward; autograd delivers a placeholder
  bool reducing = false;   // its bucket is being reduced: no more writes this step
};

struct ParamBuffers::Entry {
  torch::Tensor param;
  torch::Tensor grad;  // main gradient, shaped like the parameter (view of the buffer)
  size_t buffer = 0, bucket = 0;
  int64_t offset = 0;  // in the buffer
  bool low_precision = false;
  bool sequence_parallel = false;  // its gradient is also summed over tp
  std::unique_ptr<MainGradSlot> slot;  // 16-bit parameters
  bool ready = false;    // its gradient of the synced backward is in
  std::shared_ptr<torch::autograd::Node> accumulator;
  uintptr_t hook_key = 0;
};

struct ParamBuffers::Bucket {
  size_t buffer = 0;
  int64_t begin = 0, size = 0;  // elements of the buffer, padded
  std::vector<size_t> entries;
  size_t pending = 0;  // entries whose gradient has not arrived in the synced backward
  bool started = false;
  WorkPtr work;
};

struct ParamBuffers::Buffer {
  bool expert = false;
  bool stage_tied = false;
  torch::ScalarType dtype = torch::kFloat;       // of the parameters
  torch::ScalarType grad_dtype = torch::kFloat;  // of their main gradients
  torch::Device device = torch::kCPU;
  Communicator* group = nullptr;  // dp_cp or edp
  torch::Tensor values, grads;    // flat: parameter dtype, gradient dtype
  int64_t numel = 0, shard_numel = 0;
  int64_t open_bucket = -1, open_bytes = 0;
};

// Runs after a parameter's gradient accumulator: its gradient of this backward is complete.
class ParamBuffers::Hook : public torch::autograd::FunctionPostHook {
 public:
  Hook(ParamBuffers* owner, size_t entry) : owner_(owner), entry_(entry) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    owner_->on_grad_ready(entry_);
    return outputs;
  }

 private:
  ParamBuffers* owner_;
  size_t entry_;
};

ParamBuffers::ParamBuffers(const std::vector<torch::Tensor>& params, ParamRegistry& registry,
                           ProcessGroups& groups, BufferOptions options)
    : options_(options), groups_(groups), registry_(registry) {
  FT_CHECK(options_.grad_dtype == torch::kFloat || options_.grad_dtype == torch::kBFloat16,
           fmt::format("main gradients of dtype {}: fp32 or bf16", c10::toString(options_.grad_dtype)));
  // Buckets in reverse registration order, per (kind, stage-tied, dtype, device) group.
  std::map<std::tuple<bool, bool, int, std::string>, size_t> by_key;
  const auto close_bucket = [&](Buffer& buffer) {
    if (buffer.open_bucket < 0) return;
    Bucket& bucket = buckets_[static_cast<size_t>(buffer.open_bucket)];
    bucket.size = round_up(buffer.numel - bucket.begin, kAlign * buffer.group->size());
    buffer.numel = bucket.begin + bucket.size;
    buffer.open_bucket = -1;
  };
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const torch::Tensor& param = *it;
    FT_CHECK(param.is_contiguous() && param.is_leaf(), "parameters must be contiguous leaves");
    const ParamInfo info = registry.info(param);
    const auto key =
        std::make_tuple(info.expert, info.stage_tied, static_cast<int>(param.scalar_type()), param.device().str());
    auto found = by_key.find(key);
    if (found == by_key.end()) {
      found = by_key.emplace(key, buffers_.size()).first;
      Buffer buffer;
      buffer.expert = info.expert;
      buffer.stage_tied = info.stage_tied;
      buffer.dtype = param.scalar_type();
      buffer.grad_dtype = buffer.dtype == torch::kFloat ? torch::kFloat : options_.grad_dtype;
      FT_CHECK(buffer.grad_dtype == torch::kFloat || buffer.grad_dtype == buffer.dtype,
               fmt::format("{} main gradients of {} parameters: only bf16 parameters may have bf16 ones",
                           c10::toString(buffer.grad_dtype), c10::toString(buffer.dtype)));
      buffer.device = param.device();
      buffer.group = info.expert ? &groups.edp() : &groups.dp_cp();
      buffers_.push_back(std::move(buffer));
    }
    Buffer& buffer = buffers_[found->second];
    const int64_t bytes = param.numel() * static_cast<int64_t>(c10::elementSize(buffer.grad_dtype));
    if (buffer.open_bucket >= 0 && buffer.open_bytes + bytes > options_.bucket_bytes) close_bucket(buffer);
    if (buffer.open_bucket < 0) {
      buffer.open_bucket = static_cast<int64_t>(buckets_.size());
      buffer.open_bytes = 0;
      Bucket bucket;
      bucket.buffer = found->second;
      bucket.begin = buffer.numel;
      buckets_.push_back(std::move(bucket));
    }
    Entry entry;
    entry.param = param;
    entry.buffer = found->second;
    entry.bucket = static_cast<size_t>(buffer.open_bucket);
    entry.offset = round_up(buffer.numel, kAlign);
    entry.low_precision = param.scalar_type() != torch::kFloat;
    entry.sequence_parallel = info.sequence_parallel;
    buffer.numel = entry.offset + param.numel();
    buffer.open_bytes += bytes;
    buckets_[entry.bucket].entries.push_back(entries_.size());
    entries_.push_back(std::move(entry));
  }
  for (Buffer& buffer : buffers_) close_bucket(buffer);

  // The buffers; parameters become views of theirs, fp32 ones get their gradient view as .grad.
  torch::NoGradGuard no_grad;
  for (Buffer& buffer : buffers_) {
    buffer.values = torch::zeros({buffer.numel}, torch::TensorOptions().dtype(buffer.dtype).device(buffer.device));
    buffer.grads = torch::zeros({buffer.numel}, torch::TensorOptions().dtype(buffer.grad_dtype).device(buffer.device));
  }
  for (size_t e = 0; e < entries_.size(); ++e) {
    Entry& entry = entries_[e];
    Buffer& buffer = buffers_[entry.buffer];
    torch::Tensor& param = entry.param;
    buffer.values.narrow(0, entry.offset, param.numel()).copy_(param.reshape({-1}));
    param.set_(buffer.values.storage(), buffer.values.storage_offset() + entry.offset, param.sizes(),
               param.strides());
    entry.grad = buffer.grads.narrow(0, entry.offset, param.numel()).view(param.sizes());
    if (!entry.low_precision) param.mutable_grad() = entry.grad;
    if (entry.low_precision) entry.slot = std::make_unique<MainGradSlot>();
    entry_of_[param.unsafeGetTensorImpl()] = e;
    entry.accumulator = torch::autograd::impl::grad_accumulator(param);
    FT_CHECK(entry.accumulator != nullptr, "a parameter without a gradient accumulator (requires_grad off?)");
    entry.hook_key = entry.accumulator->add_post_hook(std::make_unique<Hook>(this, e));
    if (entry.sequence_parallel && groups.tp().size() > 1) sequence_parallel_grads_.push_back(entry.grad);
  }
  if (options_.fuse_wgrad) registry.set_main_grad_writer(this);

  // This rank's shard: rank r of the group owns the r-th 1/size of every bucket (the whole bucket
  // without sharding).
  for (Bucket& bucket : buckets_) {
    Buffer& buffer = buffers_[bucket.buffer];
    const int64_t parts = options_.shard ? buffer.group->size() : 1;
    const int64_t chunk = bucket.size / parts;
    const int64_t begin = bucket.begin + (options_.shard ? buffer.group->rank() : 0) * chunk;
    chunks_.push_back({buffer.grads.narrow(0, begin, chunk), buffer.values.narrow(0, begin, chunk), static_cast<int64_t>(bucket.buffer),
                       buffer.shard_numel});
    for (size_t e : bucket.entries) {
      const Entry& entry = entries_[e];
      const int64_t lo = std::max(entry.offset, begin);
      const int64_t hi = std::min(entry.offset + entry.param.numel(), begin + chunk);
      if (hi <= lo) continue;
      segments_.push_back({entry.param, buffer.grads.narrow(0, lo, hi - lo), buffer.values.narrow(0, lo, hi - lo),
                           static_cast<int64_t>(bucket.buffer), buffer.shard_numel + (lo - begin), lo - entry.offset});
    }
    buffer.shard_numel += chunk;
  }
  zero_grads();
}

ParamBuffers::~ParamBuffers() {
  for (Entry& entry : entries_) {
    if (entry.accumulator) entry.accumulator->del_post_hook(entry.hook_key);
  }
  if (registry_.main_grad_writer() == this) registry_.set_main_grad_writer(nullptr);
}

int64_t ParamBuffers::num_buffers() const { return static_cast<int64_t>(buffers_.size()); }
int64_t ParamBuffers::num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
bool ParamBuffers::buffer_is_expert(int64_t buffer) const { return buffers_.at(static_cast<size_t>(buffer)).expert; }
int64_t ParamBuffers::shard_numel(int64_t buffer) const { return buffers_.at(static_cast<size_t>(buffer)).shard_numel; }

int64_t ParamBuffers::grad_bytes() const {
  int64_t bytes = 0;
  for (const Buffer& buffer : buffers_) bytes += buffer.numel * static_cast<int64_t>(c10::elementSize(buffer.grad_dtype));
  return bytes;
}

torch::Tensor ParamBuffers::main_grad(const torch::Tensor& param) const {
  const auto it = entry_of_.find(param.unsafeGetTensorImpl());
  if (it == entry_of_.end()) throw InternalError("main_grad: the parameter is not in these buffers");
  return entries_[it->second].grad;
}

bool ParamBuffers::write_main_grad(const torch::Tensor& param,
                                   const std::function<void(const torch::Tensor& main_grad, bool accumulate)>& write) {
  const auto it = entry_of_.find(param.unsafeGetTensorImpl());
  if (it == entry_of_.end() || !entries_[it->second].slot) return false;
  Entry& entry = entries_[it->second];
  FT_CHECK(!entry.slot->reducing, "a fused weight gradient arrived after its bucket started reducing");
  write(entry.grad, entry.slot->written || entry.slot->fused);
  entry.slot->fused = true;
  return true;
}

void ParamBuffers::zero_grads() {
  FT_CHECK(next_bucket_ == 0 || next_bucket_ == buckets_.size(), "zero_grads while gradients are being reduced");
  // Buffers of 16-bit parameters are not zeroed: each parameter's first gradient of the step is
  // copied in (and one that gets none is zeroed before its bucket is reduced). Autograd adds fp32
  // gradients into their views in place, so those buffers are zeroed.
  for (Buffer& buffer : buffers_) {
    if (buffer.dtype == torch::kFloat) buffer.grads.zero_();
  }
  for (Entry& entry : entries_) {
    entry.ready = false;
    if (entry.slot) entry.slot->written = entry.slot->fused = entry.slot->reducing = false;
    // fp32 parameters accumulate into their buffer view; someone may have replaced it.
    if (!entry.low_precision && !entry.param.grad().is_same(entry.grad)) entry.param.mutable_grad() = entry.grad;
    if (entry.low_precision) entry.param.mutable_grad() = torch::Tensor();
  }
  for (Bucket& bucket : buckets_) {
    bucket.pending = bucket.entries.size();
    bucket.started = false;
    bucket.work.reset();
  }
  next_bucket_ = 0;
  started_in_backward_ = 0;
}

void ParamBuffers::on_grad_ready(size_t e) {
  Entry& entry = entries_[e];
  const torch::Tensor grad = entry.param.grad();
  if (entry.slot && entry.slot->fused) {
    // The layer wrote this gradient into the main gradient; autograd holds a placeholder.
    entry.slot->fused = false;
    entry.slot->written = true;
    entry.param.mutable_grad() = torch::Tensor();
  } else if (grad.defined() && !grad.is_same(entry.grad)) {
    // A 16-bit gradient of this backward: added into the main gradient, then freed. (An fp32
    // gradient that autograd accumulated out of place already holds the earlier sum.)
    torch::NoGradGuard no_grad;
    if (entry.low_precision && !entry.slot->written) {
      copy_grad(entry.grad, grad);
    } else if (entry.low_precision) {
      entry.grad.add_(grad);
    } else {
      entry.grad.copy_(grad);
    }
    entry.param.mutable_grad() = entry.low_precision ? torch::Tensor() : entry.grad;
    if (entry.slot) entry.slot->written = true;
  }
  if (!sync_ || !options_.overlap) return;
  Bucket& bucket = buckets_[entry.bucket];
  // A second gradient of one parameter in the synced backward (a parameter used both inside and
  // outside a recomputed region) must not change a bucket that is being reduced.
  FT_CHECK(!bucket.started,
           fmt::format("the gradient of a parameter of bucket {} arrived after the bucket was reduced", entry.bucket));
  if (entry.ready) return;
  entry.ready = true;
  if (--bucket.pending == 0) start_ready_buckets(false);
}

void ParamBuffers::start_ready_buckets(bool all) {
  while (next_bucket_ < buckets_.size() && (all || buckets_[next_bucket_].pending == 0)) {
    start_bucket(buckets_[next_bucket_++]);
    if (!all) ++started_in_backward_;
  }
}

void ParamBuffers::start_bucket(Bucket& bucket) {
  Buffer& buffer = buffers_[bucket.buffer];
  bucket.started = true;
  for (size_t e : bucket.entries) {
    if (!entries_[e].low_precision) continue;
    if (!entries_[e].slot->written) entries_[e].grad.zero_();  // no gradient this step
    entries_[e].slot->reducing = true;
  }
  if (buffer.group->size() == 1) return;
  const torch::Tensor region = buffer.grads.narrow(0, bucket.begin, bucket.size);
  bucket.work = options_.shard ? buffer.group->reduce_scatter_async(region) : buffer.group->all_reduce_async(region);
}

void ParamBuffers::finish_grad_sync() {
  start_ready_buckets(true);
  torch::NoGradGuard no_grad;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    if (!bucket.work) continue;
    const torch::Tensor result = bucket.work->wait();
    if (options_.shard) chunks_[b].grad.copy_(result);  // the reduced chunk, into this rank's shard
    bucket.work.reset();
  }
  // Replicated parameters fed only this rank's sequence chunk: summed over tp (after the dp
  // reduction; both are sums, so the order does not matter).
  if (!sequence_parallel_grads_.empty()) all_reduce_packed(sequence_parallel_grads_, groups_.tp(), options_.bucket_bytes);
  sum_stage_tied_grads();
}

void ParamBuffers::sum_stage_tied_grads() {
  // The first and the last stage hold the tied weight's buffer laid out alike (one parameter,
  // the same dp_cp group), so their shards cover the same elements. Both add in the same order
  // (first stage's + last stage's), so the copies stay bit-identical.
  Communicator& pp = groups_.pp();
  const int last = pp.size() - 1;
  if (pp.size() == 1 || (pp.rank() != 0 && pp.rank() != last)) return;
  const int peer = pp.rank() == 0 ? last : 0;
  for (const ShardChunk& chunk : chunks_) {
    if (!buffers_[static_cast<size_t>(chunk.buffer)].stage_tied) continue;
    const torch::Tensor other = pp.send_recv_async(chunk.grad, peer, torch::empty_like(chunk.grad), peer)->wait();
    if (pp.rank() == 0) {
      chunk.grad.add_(other);
    } else {
      chunk.grad.copy_(other + chunk.grad);
    }
  }
}

void ParamBuffers::gather_shards(bool values) {
  if (!options_.shard) return;
  std::vector<WorkPtr> works;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const Bucket& bucket = buckets_[b];
    Buffer& buffer = buffers_[bucket.buffer];
    if (buffer.group->size() == 1) continue;
    const torch::Tensor& full = values ? buffer.values : buffer.grads;
    const torch::Tensor& mine = values ? chunks_[b].value : chunks_[b].grad;
    works.push_back(buffer.group->all_gather_into_async(mine.clone(), full.narrow(0, bucket.begin, bucket.size)));
  }
  for (WorkPtr& work : works) work->wait();
}

void ParamBuffers::gather_params() { gather_shards(true); }

void ParamBuffers::gather_grads() { gather_shards(false); }

}  // namespace foldtron
