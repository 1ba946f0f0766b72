// Context-parallel attention (see context_parallel.h).
#include "layers/context_parallel.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace foldtron {
namespace {

// Every rank's positions, concatenated in rank order: the sequence order of a gather over cp.
torch::Tensor gathered_positions(int64_t local, int64_t cp, torch::Device device) {
  std::vector<torch::Tensor> parts;
  for (int64_t r = 0; r < cp; ++r) parts.push_back(cp_positions(local * cp, cp, r, device));
  return torch::cat(parts);
}

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

}  // namespace

torch::Tensor cp_positions(int64_t seq, int64_t cp, int64_t rank, torch::Device device) {
  FT_CHECK(seq % (2 * cp) == 0, fmt::format("sequence {} does not split into 2*cp = {} chunks", seq, 2 * cp));
  const int64_t chunk = seq / (2 * cp);
  const auto options = torch::TensorOptions().dtype(torch::kLong).device(device);
  return torch::cat({torch::arange(rank * chunk, (rank + 1) * chunk, options),
                     torch::arange((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk, options)});
}

torch::Tensor context_parallel_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         Communicator& cp, CpCommType type, const CoreAttentionFn& core) {
  const int64_t n = cp.size(), local = q.size(2);
  const torch::Tensor positions = gathered_positions(local, n, q.device());  // [s], rank-chunk order
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
      break;
  }
  throw ConfigError("parallel.cp_comm_type", "p2p (ring) context-parallel attention is not built yet",
                    "set parallel.cp_comm_type to a2a or allgather");
}

}  // namespace foldtron
