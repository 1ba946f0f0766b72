// The memory of every training instance (after Bai, Zhao & Zhao, arXiv 1908.11317): one slot per
// training instance holding its pair representation (the key, refreshed after every epoch) and its
// relation (the value). A query q (an instance's pair representation) reads it through a biaffine
// score over the active slots,
//   s_i = q^T W k_i + u^T k_i + log w(y_i)      (the instance's own slots left out while training)
//   a   = softmax(s)                            over the active slots
//   key read-out r = sum_i a_i k_i  [H],  value read-out v = sum_i a_i onehot(y_i)  [K]
// where the active slots are those classified correctly in the last epoch (or all, without the
// active set) and w(c) = active / (classes present * active of class c) balances the classes.
//
// The bank is sharded over the data-parallel ranks (slots [first, first + size) on each), so it
// need not fit on one: a read gathers every rank's queries, scores them against the local shard,
// and combines the shards' softmax statistics with all-reduces over dp (max, then the sums). Its
// backward is the conjugate: the read-outs' gradients are gathered, each shard adds its slots'
// share of dq (all-reduced) and keeps its share of dW and du, which the data-parallel gradient
// reduction then sums like any other gradient.
#pragma once

#include <cstdint>
#include <utility>

#include <torch/types.h>

namespace foldtron {

class Communicator;

// Items [begin, end) of `count` that part `part` of `parts` takes: contiguous, sizes differing by
// at most one (the memory's slots, a batch's or a split's instances over dp).
std::pair<int64_t, int64_t> even_range(int64_t count, int64_t parts, int64_t part);

struct MemoryRead {
  torch::Tensor key;    // [b, H] r
  torch::Tensor value;  // [b, K] v
  torch::Tensor found;  // [b] bool: some active slot was read (else r = 0, v = 0)
};

class MemoryBank {
 public:
  // `slots` training instances in all, split over `dp` in contiguous ranges (sizes differing by
  // at most one).
  MemoryBank(int64_t slots, int64_t width, int64_t classes, Communicator& dp, torch::Device device);

  int64_t slots() const { return slots_; }
  int64_t first() const { return first_; }  // this rank's slots: [first, first + size)
  int64_t size() const { return size_; }
  int64_t width() const { return width_; }
  int64_t classes() const { return classes_; }
  Communicator& dp() const { return dp_; }
  bool filled() const { return filled_; }
  // The slot range of dp rank `rank`.
  std::pair<int64_t, int64_t> range_of(int64_t rank) const;

  // This rank's shard: keys [size, H], labels [size] int64, active [size] bool. Collective over
  // dp (the class counts behind the balancing weights).
  void store(const torch::Tensor& keys, const torch::Tensor& labels, const torch::Tensor& active);
  const torch::Tensor& keys() const { return keys_; }
  const torch::Tensor& labels() const { return labels_; }
  const torch::Tensor& active() const { return active_; }
  const torch::Tensor& log_weights() const { return log_weights_; }  // [size]: log w(y), -inf inactive

  // Reads for this rank's queries [b, H] (b may differ between ranks, and be 0) with the
  // biaffine W [H, H] and u [H]; exclude [b, 2] int64: the slots [first, last] each query must
  // not read (while training, its relation's: an instance of two senses fills two slots), -1 -1
  // for none. Differentiable in query, w and u. Collective over dp (the bank's tensors go into
  // the autograd graph as they are now: a later store() does not change this read's backward).
  MemoryRead read(const torch::Tensor& query, const torch::Tensor& w, const torch::Tensor& u,
                  const torch::Tensor& exclude) const;

 private:
  int64_t slots_, width_, classes_;
  Communicator& dp_;
  int64_t first_ = 0, size_ = 0;
  bool filled_ = false;
  torch::Tensor keys_, labels_, active_, log_weights_;
};

// The same read over one whole bank with plain differentiable operations (no collective): the
// reference the sharded read is tested against. keys [N, H], labels [N], log_weights [N],
// exclude [b, 2].
MemoryRead memory_read_reference(const torch::Tensor& query, const torch::Tensor& w, const torch::Tensor& u,
                                 const torch::Tensor& keys, const torch::Tensor& labels,
                                 const torch::Tensor& log_weights, const torch::Tensor& exclude, int64_t classes);

// log w(y_i) for every slot of a whole bank (inactive: -inf), as MemoryBank::store computes it (fp64).
torch::Tensor memory_log_weights(const torch::Tensor& labels, const torch::Tensor& active, int64_t classes);

}  // namespace foldtron
