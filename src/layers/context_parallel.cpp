// Context-parallel attention (see context_parallel.h).
#include "layers/context_parallel.h"

#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace foldtron {
namespace {

// [b, heads, s/cp, d] sequence-split -> [b, heads/cp, s, d] head-split, in rank-chunk order.
torch::Tensor heads_from_sequence(const torch::Tensor& x, Communicator& cp) {
  const int64_t b = x.size(0), heads = x.size(1), s = x.size(2), d = x.size(3), n = cp.size();
  // Rows of destination j: my tokens of head group j. [n * s, b, heads/n, d]
  const torch::Tensor send = x.reshape({b, n, heads / n, s, d}).permute({1, 3, 0, 2, 4}).reshape({n * s, b, heads / n, d});
  const std::vector<int64_t> rows(static_cast<size_t>(n), s);
  const torch::Tensor received = all_to_all(send, cp, rows, rows);  // source rank's tokens, my heads
  return received.permute({1, 2, 0, 3});                           // [b, heads/n, n * s, d]
}

// The inverse: [b, heads/cp, s, d] head-split (rank-chunk order) -> [b, heads, s/cp, d].
torch::Tensor sequence_from_heads(const torch::Tensor& x, Communicator& cp) {
  const int64_t b = x.size(0), group = x.size(1), d = x.size(3), n = cp.size(), s = x.size(2) / n;
  const torch::Tensor send = x.permute({2, 0, 1, 3}).contiguous();  // [n * s, b, group, d]: rows of rank j's tokens
  const std::vector<int64_t> rows(static_cast<size_t>(n), s);
  const torch::Tensor received = all_to_all(send, cp, rows, rows);  // [n (head group), s, b, group, d]
  return received.reshape({n, s, b, group, d}).permute({2, 0, 3, 1, 4}).reshape({b, n * group, s, d});
}

// Scores of q [b, hq, sq, d] over one key block k [b, hq, sk, d] (heads repeated), fp32, -inf where
// the key comes after the query.
torch::Tensor block_scores(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& q_pos,
                           const torch::Tensor& k_pos, double scale) {
  const torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) * scale;
  const torch::Tensor allowed = k_pos.unsqueeze(0) <= q_pos.unsqueeze(1);  // [sq, sk]
  return scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
}

// [b, hq, s, d] gradients of repeated heads -> [b, hkv, s, d], summed over each group's repeats.
torch::Tensor fold_heads(const torch::Tensor& x, int64_t kv_heads) {
  return x.reshape({x.size(0), kv_heads, x.size(1) / kv_heads, x.size(2), x.size(3)}).sum(2);
}

// One hop around the ring: `t` goes to the next rank, the previous rank's comes back.
WorkPtr ring_hop(Communicator& cp, const torch::Tensor& t) {
  const int n = cp.size(), r = cp.rank();
  return cp.send_recv_async(t, (r + 1) % n, torch::empty_like(t), (r + n - 1) % n);
}

class RingAttention : public torch::autograd::Function<RingAttention> {
 public:
  // The group travels as an integer in saved_data (it outlives the graph: ProcessGroups owns it).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q_in,
                               const torch::Tensor& k_in, const torch::Tensor& v_in, int64_t group, double scale) {
    Communicator& cp = *reinterpret_cast<Communicator*>(group);
    const int64_t n = cp.size(), r = cp.rank(), local = q_in.size(2), kv_heads = k_in.size(1);
    const int64_t repeat = q_in.size(1) / kv_heads;
    const torch::Tensor q = q_in.to(torch::kFloat);
    const torch::Tensor q_pos = cp_positions(local * n, n, r, q.device());
    // [2, b, hkv, s/cp, d]: the key/value block held (this rank's first), sent in its own dtype.
    torch::Tensor kv = torch::stack({k_in, v_in}).contiguous();
    torch::Tensor out = torch::zeros_like(q);
    torch::Tensor lse = torch::full({q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<float>::infinity(),
                                    q.options());
    for (int64_t i = 0; i < n; ++i) {
      WorkPtr next = i + 1 < n ? ring_hop(cp, kv) : nullptr;  // overlaps with this block's math
      const int64_t src = (r - i + n) % n;
      const torch::Tensor scores = block_scores(q, kv[0].to(torch::kFloat).repeat_interleave(repeat, 1),
                                                q_pos, cp_positions(local * n, n, src, q.device()), scale);
      const torch::Tensor block_lse = scores.logsumexp(-1);  // -inf for queries that see none of the block
      const torch::Tensor safe = torch::where(block_lse.isinf(), torch::zeros_like(block_lse), block_lse);
      const torch::Tensor block_out =
          torch::matmul((scores - safe.unsqueeze(-1)).exp(), kv[1].to(torch::kFloat).repeat_interleave(repeat, 1));
      // Every query sees itself in block 0, so `lse` is finite from there on.
      const torch::Tensor merged = torch::logaddexp(lse, block_lse);
      out = out * (lse - merged).exp().unsqueeze(-1) + block_out * (block_lse - merged).exp().unsqueeze(-1);
      lse = merged;
      if (next) kv = next->wait();
    }
    ctx->save_for_backward({q_in, k_in, v_in, out, lse});
    ctx->saved_data["group"] = group;
    ctx->saved_data["scale"] = scale;
    return out.to(q_in.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor q = saved[0].to(torch::kFloat), out = saved[3], lse = saved[4];
    Communicator& cp = *reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t n = cp.size(), r = cp.rank(), local = q.size(2), kv_heads = saved[1].size(1);
    const int64_t repeat = q.size(1) / kv_heads;
    const torch::Tensor q_pos = cp_positions(local * n, n, r, q.device());
    const torch::Tensor dout = grads[0].to(torch::kFloat);
    const torch::Tensor delta = (dout * out).sum(-1, /*keepdim=*/true);  // [b, hq, sq, 1]
    torch::Tensor dq = torch::zeros_like(q);
    torch::Tensor kv = torch::stack({saved[1], saved[2]}).contiguous();  // [2, b, hkv, s/cp, d], own dtype
    torch::Tensor dkv = torch::zeros(kv.sizes(), q.options());  // fp32 gradients of the block held, summed on its way
    for (int64_t i = 0; i < n; ++i) {
      WorkPtr next_kv = i + 1 < n ? ring_hop(cp, kv) : nullptr;
      const int64_t src = (r - i + n) % n;
      const torch::Tensor k = kv[0].to(torch::kFloat).repeat_interleave(repeat, 1);
      const torch::Tensor v = kv[1].to(torch::kFloat).repeat_interleave(repeat, 1);
      const torch::Tensor probs =
          (block_scores(q, k, q_pos, cp_positions(local * n, n, src, q.device()), scale) - lse.unsqueeze(-1)).exp();
      const torch::Tensor dscores = probs * (torch::matmul(dout, v.transpose(-1, -2)) - delta);
      dq += torch::matmul(dscores, k) * scale;
      dkv[0] += fold_heads(torch::matmul(dscores.transpose(-1, -2), q) * scale, kv_heads);
      dkv[1] += fold_heads(torch::matmul(probs.transpose(-1, -2), dout), kv_heads);
      if (next_kv) {
        dkv = ring_hop(cp, dkv)->wait();  // the block's gradients travel with it
        kv = next_kv->wait();
      }
    }
    if (n > 1) dkv = ring_hop(cp, dkv)->wait();  // the last hop brings each block's gradients home
    return {dq.to(saved[0].scalar_type()), dkv[0].to(saved[1].scalar_type()), dkv[1].to(saved[2].scalar_type()),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor cp_positions(int64_t seq, int64_t cp, int64_t rank, torch::Device device) {
  const auto options = torch::TensorOptions().dtype(torch::kLong).device(device);
  if (cp == 1) return torch::arange(seq, options);  // the whole sequence, of any length
  FT_CHECK(seq % (2 * cp) == 0, fmt::format("sequence {} does not split into 2*cp = {} chunks", seq, 2 * cp));
  const int64_t chunk = seq / (2 * cp);
  return torch::cat({torch::arange(rank * chunk, (rank + 1) * chunk, options),
                     torch::arange((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk, options)});
}

torch::Tensor cp_gathered_positions(int64_t seq, int64_t cp, torch::Device device) {
  std::vector<torch::Tensor> parts;
  for (int64_t r = 0; r < cp; ++r) parts.push_back(cp_positions(seq, cp, r, device));
  return torch::cat(parts);
}

torch::Tensor context_parallel_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         Communicator& cp, CpCommType type, double scale, const CoreAttentionFn& core) {
  const int64_t n = cp.size(), local = q.size(2);
  const torch::Tensor positions = cp_gathered_positions(local * n, n, q.device());  // [s], rank-chunk order
  switch (type) {
    case CpCommType::kAllGather: {
      // Keys and values of every rank along the sequence; backward sums their gradients back.
      const auto gather = [&](const torch::Tensor& t) {  // [b, h, s/cp, d] -> [b, h, s, d]
        return gather_from_sequence(t.permute({2, 0, 1, 3}), cp).permute({1, 2, 0, 3});
      };
      const torch::Tensor mine = positions.narrow(0, cp.rank() * local, local);
      const torch::Tensor mask = positions.unsqueeze(0) <= mine.unsqueeze(1);  // [s/cp, s]
      return core(q, gather(k), gather(v), mask);
    }
    case CpCommType::kAllToAll: {
      // Whole sequence, heads/cp heads; sorted into natural order for causal attention.
      const torch::Tensor order = positions.argsort();   // natural position -> rank-chunk row
      const torch::Tensor back = order.argsort();        // rank-chunk row -> natural position
      const auto to_natural = [&](const torch::Tensor& t) { return heads_from_sequence(t, cp).index_select(2, order); };
      const torch::Tensor out = core(to_natural(q), to_natural(k), to_natural(v), torch::Tensor());
      return sequence_from_heads(out.index_select(2, back), cp);
    }
    case CpCommType::kP2P:
      return RingAttention::apply(q, k, v, reinterpret_cast<int64_t>(&cp), scale);
  }
  throw InternalError("unknown context-parallel attention type");
}

}  // namespace foldtron
