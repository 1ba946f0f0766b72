// The sharded memory of training instances and its collective read (see memory.h).
#include "tasks/discourse/memory.h"

#include <torch/torch.h>

#include "core/errors.h"
#include "core/math.h"
#include "parallel/communicator.h"

namespace foldtron {
namespace {

// log w(y_i) from the active slots' class counts [K] over the whole bank.
torch::Tensor log_weights_from_counts(const torch::Tensor& counts, const torch::Tensor& labels,
                                      const torch::Tensor& active) {
  const torch::Tensor total = counts.sum();
  const torch::Tensor present = (counts > 0).sum().to(counts.dtype());
  const torch::Tensor weight = total / (present * counts.clamp_min(1));  // [K]
  return torch::where(active, weight.index_select(0, labels).log(), torch::full_like(weight.index_select(0, labels), -kInf));
}

// s [B, n] (slots first .. first + n - 1) at -inf where slot i lies in [exclude[j][0], exclude[j][1]].
torch::Tensor mask_excluded(const torch::Tensor& s, const torch::Tensor& exclude, int64_t first) {
  const torch::Tensor slots = torch::arange(first, first + s.size(1), exclude.options()).unsqueeze(0);  // [1, n]
  const torch::Tensor blocked = (slots >= exclude.select(1, 0).unsqueeze(1)) & (slots <= exclude.select(1, 1).unsqueeze(1));
  return s.masked_fill(blocked, -kInf);  // [B, n]
}

// Each rank's row count of a per-rank tensor, and this rank's offset among them.
struct Rows {
  std::vector<int64_t> counts;
  int64_t offset = 0, total = 0;
};

Rows gather_rows(Communicator& dp, int64_t mine) {
  Rows out;
  const auto all = dp.all_gather_ints({mine});
  for (size_t r = 0; r < all.size(); ++r) {
    out.counts.push_back(all[r].at(0));
    if (static_cast<int>(r) < dp.rank()) out.offset += all[r][0];
    out.total += all[r][0];
  }
  return out;
}

// The read as an autograd function whose forward and backward each run their collectives over dp.
// The bank's shard (keys [n, H], one-hot labels [n, K], log weights [n]) comes in as tensors and
// is saved with the read, so the backward reads the bank this forward read.
class ShardedRead : public torch::autograd::Function<ShardedRead> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor query,
                                                torch::Tensor w, torch::Tensor u, torch::Tensor keys, torch::Tensor y,
                                                torch::Tensor log_weights, torch::Tensor exclude, int64_t first,
                                                Communicator* dp) {
    const int64_t b = query.size(0), h = keys.size(1), k = y.size(1);
    // dp (host): every rank's query count, so the gathers below know their rows.
    const Rows rows = gather_rows(*dp, b);
    // dp: every rank reads every query of the job against its shard.
    const torch::Tensor q = dp->all_gather(query.contiguous(), rows.counts);    // [B, H], B = sum of b over dp
    const torch::Tensor x = dp->all_gather(exclude.contiguous(), rows.counts);  // [B, 2]
    const torch::Tensor s =
        mask_excluded(q.mm(w).mm(keys.t()) + keys.mv(u).unsqueeze(0) + log_weights.unsqueeze(0), x, first);  // [B, n]
    torch::Tensor m = s.size(1) > 0 ? s.amax(1) : torch::full({rows.total}, -kInf, s.options());  // [B]
    dp->all_reduce(m, ReduceOp::kMax);  // dp: the largest score over every shard
    const torch::Tensor m_safe = torch::where(m.isfinite(), m, torch::zeros_like(m));
    const torch::Tensor e = (s - m_safe.unsqueeze(1)).exp();                    // [B, n]
    torch::Tensor sums = torch::cat({e.sum(1, true), e.mm(keys), e.mm(y)}, 1);  // [B, 1 + H + K]
    dp->all_reduce(sums);  // dp: the shards' softmax sums
    const torch::Tensor z = sums.select(1, 0), found = z > 0;
    const torch::Tensor z_safe = torch::where(found, z, torch::ones_like(z));  // [B]
    const torch::Tensor r = sums.narrow(1, 1, h) / z_safe.unsqueeze(1);        // [B, H]
    const torch::Tensor v = sums.narrow(1, 1 + h, k) / z_safe.unsqueeze(1);    // [B, K]
    ctx->save_for_backward({q, e, z_safe, r, v, w, keys, y});
    ctx->saved_data["dp"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(dp));
    ctx->saved_data["offset"] = rows.offset;
    ctx->saved_data["counts"] = rows.counts;
    torch::Tensor found_mine = found.narrow(0, rows.offset, b).clone();
    ctx->mark_non_differentiable({found_mine});
    return {r.narrow(0, rows.offset, b).clone(), v.narrow(0, rows.offset, b).clone(), found_mine};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // (the communicator outlives the read: the job's process groups own it)
    auto* dp = reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["dp"].toInt()));
    const int64_t offset = ctx->saved_data["offset"].toInt();
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &e = saved[1], &z = saved[2], &r = saved[3], &v = saved[4], &w = saved[5];
    const torch::Tensor &keys = saved[6], &y = saved[7];  // [n, H], [n, K]
    const int64_t b = counts.at(static_cast<size_t>(dp->rank()));
    const auto grad_or_zero = [&](const torch::Tensor& g, int64_t width) {
      return g.defined() ? g.contiguous() : torch::zeros({b, width}, q.options());
    };
    // dp: every query's upstream gradient, as in the forward.
    const torch::Tensor gr = dp->all_gather(grad_or_zero(grads[0], r.size(1)), counts);  // [B, H]
    const torch::Tensor gv = dp->all_gather(grad_or_zero(grads[1], v.size(1)), counts);  // [B, K]
    const torch::Tensor a = e / z.unsqueeze(1);                                          // [B, n]
    // dL/ds_i = a_i ((gr . k_i + gv . y_i) - (gr . r + gv . v))
    const torch::Tensor gs =
        a * (gr.mm(keys.t()) + gv.mm(y.t()) - (gr * r).sum(1, true) - (gv * v).sum(1, true));  // [B, n]
    const torch::Tensor gs_keys = gs.mm(keys);  // [B, H]
    torch::Tensor dq = gs_keys.mm(w.t());       // [B, H], this shard's share
    dp->all_reduce(dq);                         // dp: summed over the shards
    const torch::Tensor dw = q.t().mm(gs_keys);                           // [H, H] this shard's share (dp sums later)
    const torch::Tensor du = gs.sum(0).unsqueeze(0).mm(keys).squeeze(0);  // [H] likewise
    return {dq.narrow(0, offset, b).clone(), dw, du, torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

MemoryBank::MemoryBank(int64_t slots, int64_t width, int64_t classes, Communicator& dp, torch::Device device)
    : slots_(slots), width_(width), classes_(classes), dp_(dp) {
  std::tie(first_, size_) = range_of(dp.rank());
  size_ -= first_;
  const auto options = torch::TensorOptions().device(device);
  keys_ = torch::zeros({size_, width}, options);
  labels_ = torch::zeros({size_}, options.dtype(torch::kLong));
  active_ = torch::zeros({size_}, options.dtype(torch::kBool));
  log_weights_ = torch::full({size_}, -kInf, options);
}

std::pair<int64_t, int64_t> even_range(int64_t count, int64_t parts, int64_t part) {
  const int64_t base = count / parts, extra = count % parts;
  const int64_t begin = part * base + std::min(part, extra);
  return {begin, begin + base + (part < extra ? 1 : 0)};
}

std::pair<int64_t, int64_t> MemoryBank::range_of(int64_t rank) const { return even_range(slots_, dp_.size(), rank); }

void MemoryBank::store(const torch::Tensor& keys, const torch::Tensor& labels, const torch::Tensor& active) {
  FT_CHECK(keys.size(0) == size_ && keys.size(1) == width_ && labels.size(0) == size_ && active.size(0) == size_,
           "a memory shard of the bank's shape");
  keys_ = keys.detach().to(keys_.device()).contiguous();  // fp32 (the classifier's) or fp64 (the tests')
  labels_ = labels.to(labels_.device(), torch::kLong).contiguous();
  active_ = active.to(active_.device(), torch::kBool).contiguous();
  torch::Tensor counts = torch::zeros({classes_}, keys_.options());
  counts.index_add_(0, labels_, active_.to(counts.dtype()));
  dp_.all_reduce(counts);  // dp: the class counts of the whole bank (the balancing weights)
  log_weights_ = log_weights_from_counts(counts, labels_, active_);
  filled_ = true;
}

MemoryRead MemoryBank::read(const torch::Tensor& query, const torch::Tensor& w, const torch::Tensor& u,
                            const torch::Tensor& exclude) const {
  FT_CHECK(filled_, "the memory is read after it is stored");
  const torch::Tensor y = torch::one_hot(labels_, classes_).to(keys_.dtype());  // [n, K]
  const torch::autograd::variable_list out =
      ShardedRead::apply(query.to(keys_.dtype()), w, u, keys_, y, log_weights_.to(keys_.dtype()),
                         exclude.to(keys_.device(), torch::kLong), first_, &dp_);
  return {out[0], out[1], out[2]};
}

torch::Tensor memory_log_weights(const torch::Tensor& labels, const torch::Tensor& active, int64_t classes) {
  torch::Tensor counts = torch::zeros({classes}, torch::TensorOptions().device(labels.device()).dtype(torch::kDouble));
  counts.index_add_(0, labels, active.to(counts.dtype()));
  return log_weights_from_counts(counts, labels, active);
}

MemoryRead memory_read_reference(const torch::Tensor& query, const torch::Tensor& w, const torch::Tensor& u,
                                 const torch::Tensor& keys, const torch::Tensor& labels,
                                 const torch::Tensor& log_weights, const torch::Tensor& exclude, int64_t classes) {
  const torch::Tensor s =
      mask_excluded(query.mm(w).mm(keys.t()) + keys.mv(u).unsqueeze(0) + log_weights.unsqueeze(0), exclude, 0);  // [b, N]
  const torch::Tensor m = s.amax(1).detach();
  const torch::Tensor e = (s - torch::where(m.isfinite(), m, torch::zeros_like(m)).unsqueeze(1)).exp();
  const torch::Tensor z = e.sum(1, true), found = z.squeeze(1) > 0;
  const torch::Tensor a = e / torch::where(z > 0, z, torch::ones_like(z));
  return {a.mm(keys), a.mm(torch::one_hot(labels, classes).to(keys.dtype())), found};
}

}  // namespace foldtron
