// Context-parallel attention (see context_parallel.h).
#include "layers/context_parallel.h"

#include <limits>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/torch_compat.h"
#include "layers/attention.h"
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

torch::Tensor query_rows(const torch::Tensor& t, const AttentionPiece& piece) {
  return t.narrow(2, piece.q_begin, piece.q_len);
}
torch::Tensor key_rows(const torch::Tensor& t, const AttentionPiece& piece) {
  return t.narrow(2, piece.k_begin, piece.k_len);
}

// fp32 scores of one piece [b, hq, q_len, k_len], -inf above the diagonal of a causal piece.
torch::Tensor piece_scores(const torch::Tensor& q, const torch::Tensor& k, const AttentionPiece& piece, double scale) {
  const torch::Tensor scores =
      torch::matmul(query_rows(q, piece).to(torch::kFloat), key_rows(k, piece).to(torch::kFloat).transpose(-1, -2)) *
      scale;
  if (!piece.causal) return scores;
  const torch::Tensor later = torch::ones({piece.q_len, piece.k_len}, scores.options().dtype(torch::kBool)).triu(1);
  return scores.masked_fill(later, -std::numeric_limits<float>::infinity());
}

// The running result of a merged attention: the output [b, hq, sq, d] and log-sum-exp [b, hq, sq]
// (fp32; zeros and -inf until a piece covers the query).
struct Merged {
  torch::Tensor out, lse;
};

Merged start_merge(const torch::Tensor& q) {
  const torch::Tensor out = torch::zeros(q.sizes(), q.options().dtype(torch::kFloat));
  return {out, torch::full({q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<float>::infinity(), out.options())};
}

// The finished output in q's dtype, with what backward reads saved: q, k, v, the output (as the
// kernel's backward takes it) and the log-sum-exp.
torch::Tensor finish_merge(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                           const torch::Tensor& v, const Merged& merged, PieceKernel kernel) {
  const torch::Tensor result = merged.out.to(q.scalar_type());
  ctx->save_for_backward({q, k, v, kernel == PieceKernel::kMath ? merged.out : result, merged.lse});
  return result;
}

// The attention of the pieces' queries over one key block (k, v with q's head count), merged
// into `merged`.
void attend_pieces(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                   const std::vector<AttentionPiece>& pieces, double scale, const Merged& merged,
                   PieceKernel kernel) {
  for (const AttentionPiece& piece : pieces) {
    torch::Tensor piece_out, piece_lse;  // every query of a piece sees a key: its lse is finite
    if (kernel != PieceKernel::kMath) {
      const auto fused = kernel == PieceKernel::kCudnn ? torch_compat::cudnn_attention : torch_compat::flash_attention;
      std::tie(piece_out, piece_lse) =
          fused(query_rows(q, piece), key_rows(k, piece), key_rows(v, piece), piece.causal, scale);
    } else {
      const torch::Tensor scores = piece_scores(q, k, piece, scale);
      piece_lse = scores.logsumexp(-1);
      piece_out = torch::matmul((scores - piece_lse.unsqueeze(-1)).exp(), key_rows(v, piece).to(torch::kFloat));
    }
    torch::Tensor rows_out = query_rows(merged.out, piece), rows_lse = query_rows(merged.lse, piece);
    const torch::Tensor both = torch::logaddexp(rows_lse, piece_lse);
    rows_out.mul_((rows_lse - both).exp().unsqueeze(-1))
        .add_(piece_out.to(torch::kFloat) * (piece_lse - both).exp().unsqueeze(-1));
    rows_lse.copy_(both);
  }
}

// What backward needs of a merged attention: q, the output's gradient, and the output and
// log-sum-exp the pieces were merged into. With fused kernels `dout` and `out` are in q's dtype;
// with explicit math fp32, and delta = rowsum(dout * out).
struct BackwardInputs {
  torch::Tensor q, dout, out, lse, delta;
  PieceKernel kernel = PieceKernel::kMath;
};

BackwardInputs backward_inputs(const torch::Tensor& q, const torch::Tensor& grad, const torch::Tensor& out,
                                 const torch::Tensor& lse, PieceKernel kernel) {
  BackwardInputs m{q, torch::Tensor(), out, lse, torch::Tensor(), kernel};
  if (kernel != PieceKernel::kMath) {
    m.dout = grad.to(q.scalar_type()).contiguous();
  } else {
    m.dout = grad.to(torch::kFloat);
    m.delta = (m.dout * out).sum(-1, /*keepdim=*/true);
  }
  return m;
}

// [b, hq, s, d] gradients of repeated heads -> [b, hkv, s, d] fp32, summed over each group's repeats.
torch::Tensor fold_heads(const torch::Tensor& x, int64_t kv_heads) {
  return x.reshape({x.size(0), kv_heads, x.size(1) / kv_heads, x.size(2), x.size(3)})
      .sum(2, /*keepdim=*/false, torch::kFloat);
}

// Adds the pieces' share of the gradients over one key block into dq [b, hq, sq, d] and dk, dv
// [b, hkv, sk, d] (fp32; k, v with q's head count, each piece's key gradients summed over the
// repeats of their heads as they come, so no gradient of the repeated keys is held whole).
void attend_pieces_backward(const BackwardInputs& m, const torch::Tensor& k, const torch::Tensor& v,
                            const std::vector<AttentionPiece>& pieces, double scale, const torch::Tensor& dq,
                            const torch::Tensor& dk, const torch::Tensor& dv) {
  for (const AttentionPiece& piece : pieces) {
    if (m.kernel != PieceKernel::kMath) {
      const auto fused = m.kernel == PieceKernel::kCudnn ? torch_compat::cudnn_attention_backward
                                                         : torch_compat::flash_attention_backward;
      const auto [gq, gk, gv] = fused(
          query_rows(m.dout, piece), query_rows(m.q, piece), key_rows(k, piece), key_rows(v, piece),
          query_rows(m.out, piece), query_rows(m.lse, piece).contiguous(), piece.causal,
          scale);
      query_rows(dq, piece).add_(gq);
      key_rows(dk, piece).add_(fold_heads(gk, dk.size(1)));
      key_rows(dv, piece).add_(fold_heads(gv, dv.size(1)));
      continue;
    }
    const torch::Tensor probs =
        (piece_scores(m.q, k, piece, scale) - query_rows(m.lse, piece).unsqueeze(-1)).exp();
    const torch::Tensor dout = query_rows(m.dout, piece);
    const torch::Tensor dscores =
        probs * (torch::matmul(dout, key_rows(v, piece).to(torch::kFloat).transpose(-1, -2)) -
                 query_rows(m.delta, piece));
    query_rows(dq, piece).add_(torch::matmul(dscores, key_rows(k, piece).to(torch::kFloat)), scale);
    key_rows(dk, piece).add_(
        fold_heads(torch::matmul(dscores.transpose(-1, -2), query_rows(m.q, piece).to(torch::kFloat)), dk.size(1)),
        scale);
    key_rows(dv, piece).add_(fold_heads(torch::matmul(probs.transpose(-1, -2), dout), dv.size(1)));
  }
}

// Pieces travel through autograd's saved data as five integers each.
std::vector<int64_t> flatten(const std::vector<AttentionPiece>& pieces) {
  std::vector<int64_t> flat;
  for (const AttentionPiece& p : pieces) flat.insert(flat.end(), {p.q_begin, p.q_len, p.k_begin, p.k_len, p.causal ? 1 : 0});
  return flat;
}
std::vector<AttentionPiece> unflatten(const std::vector<int64_t>& flat) {
  std::vector<AttentionPiece> pieces;
  for (size_t i = 0; i + 4 < flat.size(); i += 5) {
    pieces.push_back({flat[i], flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4] != 0});
  }
  return pieces;
}

class PiecewiseAttention : public torch::autograd::Function<PiecewiseAttention> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const std::vector<int64_t>& pieces, double scale,
                               int64_t kernel) {
    const int64_t repeat = q.size(1) / k.size(1);
    const Merged merged = start_merge(q);
    const auto chosen = static_cast<PieceKernel>(kernel);
    attend_pieces(q, repeat_heads(k, repeat), repeat_heads(v, repeat), unflatten(pieces), scale, merged, chosen);
    ctx->saved_data["pieces"] = pieces;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["kernel"] = kernel;
    return finish_merge(ctx, q, k, v, merged, chosen);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    const int64_t repeat = q.size(1) / k.size(1);
    const BackwardInputs m =
        backward_inputs(q, grads[0], saved[3], saved[4], static_cast<PieceKernel>(ctx->saved_data["kernel"].toInt()));
    const auto options = q.options().dtype(torch::kFloat);
    const torch::Tensor dq = torch::zeros(q.sizes(), options);
    const torch::Tensor dk = torch::zeros(k.sizes(), options), dv = torch::zeros(v.sizes(), options);
    attend_pieces_backward(m, repeat_heads(k, repeat), repeat_heads(v, repeat),
                           unflatten(ctx->saved_data["pieces"].toIntVector()), ctx->saved_data["scale"].toDouble(), dq,
                           dk, dv);
    return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

// One hop around the ring: `t` goes to the next rank, the previous rank's comes back.
WorkPtr ring_hop(Communicator& cp, const torch::Tensor& t) {
  const int n = cp.size(), r = cp.rank();
  return cp.send_recv_async(t, (r + 1) % n, torch::empty_like(t), (r + n - 1) % n);
}

class RingAttention : public torch::autograd::Function<RingAttention> {
 public:
  // The group travels as an integer in saved_data (it outlives the graph: ProcessGroups owns it).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q,
                               const torch::Tensor& k_in, const torch::Tensor& v_in, int64_t group, double scale) {
    Communicator& cp = *reinterpret_cast<Communicator*>(group);
    const int64_t n = cp.size(), r = cp.rank(), local = q.size(2), repeat = q.size(1) / k_in.size(1);
    // [2, b, hkv, s/cp, d]: the key/value block held (this rank's first), sent in its own dtype.
    torch::Tensor kv = torch::stack({k_in, v_in}).contiguous();
    const Merged merged = start_merge(q);
    const PieceKernel kernel = piece_kernel(q);
    for (int64_t i = 0; i < n; ++i) {
      WorkPtr next = i + 1 < n ? ring_hop(cp, kv) : nullptr;  // overlaps with this block's math
      attend_pieces(q, repeat_heads(kv[0], repeat), repeat_heads(kv[1], repeat), {ring_piece(r, (r - i + n) % n, local)},
                    scale, merged, kernel);
      if (next) kv = next->wait();
    }
    ctx->saved_data["group"] = group;
    ctx->saved_data["scale"] = scale;
    return finish_merge(ctx, q, k_in, v_in, merged, kernel);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& q = saved[0];
    Communicator& cp = *reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t n = cp.size(), r = cp.rank(), local = q.size(2), kv_heads = saved[1].size(1);
    const int64_t repeat = q.size(1) / kv_heads;
    const BackwardInputs m = backward_inputs(q, grads[0], saved[3], saved[4], piece_kernel(q));
    const auto options = q.options().dtype(torch::kFloat);
    const torch::Tensor dq = torch::zeros(q.sizes(), options);
    torch::Tensor kv = torch::stack({saved[1], saved[2]}).contiguous();  // [2, b, hkv, s/cp, d], own dtype
    torch::Tensor dkv = torch::zeros(kv.sizes(), options);  // fp32 gradients of the block held, summed on its way
    for (int64_t i = 0; i < n; ++i) {
      WorkPtr next_kv = i + 1 < n ? ring_hop(cp, kv) : nullptr;
      attend_pieces_backward(m, repeat_heads(kv[0], repeat), repeat_heads(kv[1], repeat),
                             {ring_piece(r, (r - i + n) % n, local)}, scale, dq, dkv[0], dkv[1]);
      if (next_kv) {
        dkv = ring_hop(cp, dkv)->wait();  // the block's gradients travel with it
        kv = next_kv->wait();
      }
    }
    if (n > 1) dkv = ring_hop(cp, dkv)->wait();  // the last hop brings each block's gradients home
    return {dq.to(q.scalar_type()), dkv[0].to(saved[1].scalar_type()), dkv[1].to(saved[2].scalar_type()),
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

std::vector<AttentionPiece> allgather_pieces(int64_t rank, int64_t cp, int64_t local) {
  if (cp == 1) return {{0, local, 0, local, true}};
  const int64_t chunk = local / 2, first = rank * chunk, second = (2 * cp - 1 - rank) * chunk;
  std::vector<AttentionPiece> pieces = {
      {0, chunk, first, chunk, true}, {chunk, chunk, 0, second, false}, {chunk, chunk, second, chunk, true}};
  if (first > 0) pieces.push_back({0, chunk, 0, first, false});
  return pieces;
}

AttentionPiece ring_piece(int64_t rank, int64_t src, int64_t local) {
  const int64_t half = local / 2;
  if (src == rank) return {0, local, 0, local, true};
  if (src < rank) return {0, local, 0, half, false};
  return {half, half, 0, local, false};
}

bool piece_kernel_runs(PieceKernel kernel, const torch::Tensor& q) {
  if (kernel == PieceKernel::kMath) return true;
  const torch::ScalarType type = q.scalar_type();
  // Both fused kernels need an Ampere or newer GPU.
  const bool fused = q.is_cuda() && (type == torch::kBFloat16 || type == torch::kHalf) && q.size(-1) % 8 == 0 &&
                     torch_compat::cuda_compute_major(q.device().index()) >= 8;
  if (kernel == PieceKernel::kCudnn) return fused && torch_compat::has_cudnn_attention() && q.size(-1) <= 128;
  return fused && torch_compat::has_flash_attention() && q.size(-1) <= 256;
}

PieceKernel piece_kernel(const torch::Tensor& q) {
  for (const PieceKernel kernel : {PieceKernel::kCudnn, PieceKernel::kFlash}) {
    if (piece_kernel_runs(kernel, q)) return kernel;
  }
  return PieceKernel::kMath;
}

torch::Tensor piecewise_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const std::vector<AttentionPiece>& pieces, double scale) {
  return piecewise_attention(q, k, v, pieces, scale, piece_kernel(q));
}

torch::Tensor piecewise_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const std::vector<AttentionPiece>& pieces, double scale, PieceKernel kernel) {
  FT_CHECK(piece_kernel_runs(kernel, q),
           fmt::format("piecewise_attention: kernel {} cannot run a {} query of head size {} on {}",
                       static_cast<int>(kernel), c10::toString(q.scalar_type()), q.size(-1), q.device().str()));
  for (const AttentionPiece& p : pieces) {
    FT_CHECK(!p.causal || p.q_len == p.k_len,
             fmt::format("piecewise_attention: a causal piece must be square, not {} x {}", p.q_len, p.k_len));
  }
  return PiecewiseAttention::apply(q, k, v, flatten(pieces), scale, static_cast<int64_t>(kernel));
}

torch::Tensor context_parallel_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         Communicator& cp, CpCommType type, double scale, const CoreAttentionFn& core,
                                         bool dropout) {
  const int64_t n = cp.size(), local = q.size(2);
  const torch::Tensor positions = cp_gathered_positions(local * n, n, q.device());  // [s], rank-chunk order
  switch (type) {
    case CpCommType::kAllGather: {
      // Keys and values of every rank along the sequence; backward sums their gradients back.
      const auto gather = [&](const torch::Tensor& t) {  // [b, h, s/cp, d] -> [b, h, s, d], rank-chunk order
        return gather_from_sequence(t.permute({2, 0, 1, 3}), cp).permute({1, 2, 0, 3});
      };
      if (dropout) {
        const torch::Tensor mine = positions.narrow(0, cp.rank() * local, local);
        const torch::Tensor mask = positions.unsqueeze(0) <= mine.unsqueeze(1);  // [s/cp, s]
        return core(q, gather(k), gather(v), mask);
      }
      // In natural order, each query chunk sees every key before it and its own chunk causally.
      const torch::Tensor order = positions.argsort();
      const auto natural = [&](const torch::Tensor& t) { return gather(t).index_select(2, order); };
      return piecewise_attention(q, natural(k), natural(v), allgather_pieces(cp.rank(), n, local), scale);
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
