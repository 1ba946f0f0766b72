// Token dispatchers (see dispatcher.h).
#include "moe/dispatcher.h"

#include <numeric>

#include <torch/torch.h>

#include "core/errors.h"
#include "core/math.h"
#include "parallel/mappings.h"
#include "parallel/process_groups.h"
#ifdef FOLDTRON_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "moe/combine_cuda.h"
#endif

namespace foldtron {
namespace {

// With k copies of every token, copying tokens into rows and summing each token's rows are
// adjoint gathers: tokens [n, h] -> rows [P, h] (row p copies token token_index[p]) and
// rows [P, h] -> tokens [n, h] (the sum of rows rows_of_token[t, :]).
torch::Tensor copy_tokens(const torch::Tensor& tokens, const torch::Tensor& token_index) {
  return tokens.index_select(0, token_index);
}

torch::Tensor sum_copies(const torch::Tensor& rows, const torch::Tensor& rows_of_token) {
  const int64_t n = rows_of_token.size(0), k = rows_of_token.size(1);
  return rows.index_select(0, rows_of_token.reshape({-1})).view({n, k, rows.size(1)}).sum(1);
}

// Each as an autograd function whose backward is the other: autograd's own backward of the
// copy is an index_add (a zero fill and atomic adds, and the order of the adds varies).
class CopyTokens : public torch::autograd::Function<CopyTokens> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& tokens,
                               const torch::Tensor& token_index, const torch::Tensor& rows_of_token) {
    ctx->save_for_backward({rows_of_token});
    return copy_tokens(tokens, token_index);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    return {sum_copies(grads[0].contiguous(), ctx->get_saved_variables()[0]), torch::Tensor(), torch::Tensor()};
  }
};

class SumCopies : public torch::autograd::Function<SumCopies> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& rows,
                               const torch::Tensor& token_index, const torch::Tensor& rows_of_token) {
    ctx->save_for_backward({token_index});
    return sum_copies(rows, rows_of_token);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    return {copy_tokens(grads[0].contiguous(), ctx->get_saved_variables()[0]), torch::Tensor(), torch::Tensor()};
  }
};

// Each row [P, h] times its routing weight [P], in the rows' type.
torch::Tensor weighted_rows(const torch::Tensor& rows, const torch::Tensor& weights) {
  return rows * weights.to(rows.scalar_type()).unsqueeze(1);
}

// Tokens [n, h] copied into the permutation's rows: [P, h].
torch::Tensor permute(const torch::Tensor& tokens, const Permutation& perm) {
  if (perm.rows_of_token.defined()) return CopyTokens::apply(tokens, perm.token_index, perm.rows_of_token);
  return copy_tokens(tokens, perm.token_index);
}

#ifdef FOLDTRON_WITH_CUDA
// weighted_sum_copies by the kernels of moe/combine_cuda.h: rows [P, h] contiguous bf16 or fp32,
// weights [P] contiguous fp32, the indices contiguous int64, all on the rows' GPU, on its current
// stream. Saves what the composed path saves (the rows and the weights), not the weighted rows.
// Its backward is not differentiable again (no double backward through the combine).
class FusedWeightedSum : public torch::autograd::Function<FusedWeightedSum> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& rows,
                               const torch::Tensor& weights, const torch::Tensor& token_index,
                               const torch::Tensor& rows_of_token) {
    const c10::cuda::CUDAGuard guard(rows.device());
    const int64_t n = rows_of_token.size(0);
    torch::Tensor out = torch::empty({n, rows.size(1)}, rows.options());  // [n, h]
    weighted_sum_copies_cuda(rows.data_ptr(), rows.scalar_type() == torch::kBFloat16, weights.data_ptr<float>(),
                             rows_of_token.data_ptr<int64_t>(), out.data_ptr(), n, rows_of_token.size(1), rows.size(1),
                             c10::cuda::getCurrentCUDAStream(rows.get_device()).stream());
    ctx->save_for_backward({rows, weights, token_index});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &rows = saved[0], &weights = saved[1], &token_index = saved[2];
    const c10::cuda::CUDAGuard guard(rows.device());
    const torch::Tensor grad_out = grads[0].to(rows.scalar_type()).contiguous();  // [n, h]
    torch::Tensor grad_rows = torch::empty_like(rows), grad_weights = torch::empty_like(weights);
    weighted_sum_copies_backward_cuda(rows.data_ptr(), rows.scalar_type() == torch::kBFloat16,
                                      weights.data_ptr<float>(), token_index.data_ptr<int64_t>(), grad_out.data_ptr(),
                                      grad_rows.data_ptr(), grad_weights.data_ptr<float>(), rows.size(0), rows.size(1),
                                      c10::cuda::getCurrentCUDAStream(rows.get_device()).stream());
    return {grad_rows, grad_weights, torch::Tensor(), torch::Tensor()};
  }
};
#endif

// Weighted expert outputs [P, h] summed into the rows of their tokens: [rows, h].
torch::Tensor unpermute(const torch::Tensor& output, const Permutation& perm, int64_t rows) {
  if (perm.rows_of_token.defined()) {
    FT_CHECK(perm.rows_of_token.size(0) == rows, "unpermute: rows_of_token does not cover the tokens");
    return weighted_sum_copies(output, perm.weights, perm.token_index, perm.rows_of_token);
  }
  return torch::zeros({rows, output.size(1)}, output.options())
      .index_add(0, perm.token_index, weighted_rows(output, perm.weights));
}

// Row chunks of sizes `sizes` (in their order), to be laid out in `order`, a permutation of the
// chunk indices.
struct ChunkOrder {
  std::vector<int64_t> sizes, order;

  // The layout back: position j of the reordered rows holds chunk order[j], of size sizes[order[j]].
  ChunkOrder inverse() const {
    ChunkOrder back{std::vector<int64_t>(order.size()), std::vector<int64_t>(order.size())};
    for (size_t j = 0; j < order.size(); ++j) {
      const auto chunk = static_cast<size_t>(order[j]);
      back.sizes[j] = sizes[chunk];
      back.order[chunk] = static_cast<int64_t>(j);
    }
    return back;
  }
};

// The row chunks of x [R, h] laid out as `chunks` says: [R, h], one copy.
torch::Tensor gather_chunks(const torch::Tensor& x, const ChunkOrder& chunks) {
  std::vector<int64_t> starts(chunks.sizes.size());
  std::exclusive_scan(chunks.sizes.begin(), chunks.sizes.end(), starts.begin(), int64_t{0});
  std::vector<torch::Tensor> pieces;
  for (int64_t c : chunks.order) {
    const auto i = static_cast<size_t>(c);
    if (chunks.sizes[i] > 0) pieces.push_back(x.narrow(0, starts[i], chunks.sizes[i]));
  }
  return pieces.empty() ? x.narrow(0, 0, 0).clone() : torch::cat(pieces, 0);
}

// gather_chunks as an autograd function whose backward reorders the gradient back, one copy.
// (Autograd through the narrowed pieces would give each piece a zero-filled gradient of all
// rows and sum them: a pass over every row per chunk, 2 x E passes per MoE layer.)
class ReorderChunks : public torch::autograd::Function<ReorderChunks> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const ChunkOrder& chunks) {
    ctx->saved_data["sizes"] = chunks.sizes;
    ctx->saved_data["order"] = chunks.order;
    return gather_chunks(x, chunks);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor()};
    const ChunkOrder chunks{ctx->saved_data["sizes"].toIntVector(), ctx->saved_data["order"].toIntVector()};
    return {gather_chunks(grads[0], chunks.inverse()), torch::Tensor()};
  }
};

// Reorders row chunks as `chunks` says; in the same order (one expert-parallel rank), x itself.
torch::Tensor reorder_chunks(const torch::Tensor& x, const ChunkOrder& chunks) {
  bool identity = true;
  for (size_t i = 0; i < chunks.order.size(); ++i) identity = identity && chunks.order[i] == static_cast<int64_t>(i);
  if (identity) return x;
  return ReorderChunks::apply(x, chunks);
}

class AllGatherDispatcher : public TokenDispatcher {
 public:
  AllGatherDispatcher(ProcessGroups& groups, const ExpertShard& shard) : group_(groups.etp_ep()), shard_(shard) {}

  struct State : DispatchState {
    std::vector<int64_t> rows;  // tokens of each rank of the group
    int64_t total = 0;
    Permutation perm;
  };

  Dispatched dispatch(const torch::Tensor& hidden, const Routing& routing) override {
    const int64_t n = hidden.size(0), first = shard_.first_expert, local = shard_.local_experts;
    const int64_t experts = routing.probs.size(1);
    auto state = std::make_shared<State>();
    std::vector<int64_t>& rows = state->rows;
    // Host: tokens, capacity and copies per token (0: not every token routed), of every rank of
    // the group.
    std::vector<int64_t> capacities;
    int64_t copies_per_token = routing.copies_per_token;
    for (const auto& r : group_.all_gather_ints({n, routing.capacity, routing.copies_per_token})) {
      rows.push_back(r[0]);
      capacities.push_back(r[1]);
      if (r[2] != copies_per_token) copies_per_token = 0;
    }
    state->total = sum_of(rows);
    // The whole group's tokens and routing weights; backward reduce-scatters their gradients.
    const torch::Tensor tokens = gather_rows(hidden, group_, rows);                              // [N, h]
    const torch::Tensor probs = gather_rows(routing.probs, group_, rows).narrow(1, first, local);  // [N, E/ep]
    if (routing.slots.defined()) {
      // Fixed slots: every rank's [E, cap_r] slots of the local experts, shifted to its rows.
      std::vector<int64_t> slot_rows;
      for (int64_t cap : capacities) slot_rows.push_back(experts * cap);
      const torch::Tensor slots = group_.all_gather(routing.slots.reshape({-1}).contiguous(), slot_rows);
      const torch::Tensor valid = group_.all_gather(routing.slot_valid.reshape({-1}).to(torch::kInt).contiguous(), slot_rows);
      std::vector<torch::Tensor> slot_parts, valid_parts;
      int64_t slot_offset = 0, row_offset = 0;
      for (size_t r = 0; r < rows.size(); ++r) {
        const int64_t cap = capacities[r];
        slot_parts.push_back(slots.narrow(0, slot_offset, experts * cap).reshape({experts, cap}).narrow(0, first, local) +
                             row_offset);
        valid_parts.push_back(valid.narrow(0, slot_offset, experts * cap).reshape({experts, cap}).narrow(0, first, local));
        slot_offset += experts * cap;
        row_offset += rows[r];
      }
      state->perm = permute_by_slots(torch::cat(slot_parts, 1), torch::cat(valid_parts, 1).to(torch::kBool), probs);
    } else {
      const torch::Tensor map = group_.all_gather(routing.routing_map.to(torch::kInt).contiguous(), rows);  // [N, E]
      // Every token of the group routed, with every expert on this rank: each token has topk
      // copies here.
      state->perm = permute_by_map(map.narrow(1, first, local).to(torch::kBool), probs,
                                   local == experts ? copies_per_token : 0);
    }
    Dispatched out{permute(tokens, state->perm), state->perm.counts, state};
    return out;
  }

  torch::Tensor combine(const torch::Tensor& expert_output, const Dispatched& dispatched) override {
    const auto& state = static_cast<const State&>(*dispatched.state);
    return reduce_scatter_rows(unpermute(expert_output, state.perm, state.total), group_, state.rows);  // [n, h]
  }

 private:
  Communicator& group_;
  ExpertShard shard_;
};

class AllToAllDispatcher : public TokenDispatcher {
 public:
  AllToAllDispatcher(ProcessGroups& groups, const ExpertShard& shard)
      : group_(groups.etp_ep()), ep_(groups.ep()), etp_(groups.etp()), shard_(shard) {
    FT_CHECK(ep_.rank() == groups.coords().ep && etp_.rank() == groups.coords().etp,
             "ep/etp group ranks must follow the ep/etp coordinates");
  }

  struct State : DispatchState {
    int64_t n = 0;
    bool exchanged = true;  // false: one rank holds every expert, nothing went anywhere
    Permutation perm;
    std::vector<int64_t> send_rows, recv_rows, etp_rows;
    ChunkOrder by_expert;  // chunks (t, q, e) of the received rows, laid out by expert
  };

  Dispatched dispatch(const torch::Tensor& hidden, const Routing& routing) override {
    auto state = std::make_shared<State>();
    state->n = hidden.size(0);
    Permutation& perm = state->perm;
    std::vector<int64_t>& send_rows = state->send_rows;
    std::vector<int64_t>& recv_rows = state->recv_rows;
    std::vector<int64_t>& etp_rows = state->etp_rows;
    ChunkOrder& by_expert = state->by_expert;
    // Dropless without padding: every token has topk copies in the map (all experts).
    perm = routing.slots.defined() ? permute_by_slots(routing.slots, routing.slot_valid, routing.probs)
                                   : permute_by_map(routing.routing_map, routing.probs, routing.copies_per_token);
    const torch::Tensor permuted = permute(hidden, perm);  // [P, h] by expert
    if (group_.size() == 1) {
      // Every expert here and no etp peer: nothing to exchange, so the counts need not reach the
      // host now (dropless: no host sync in this layer's forward).
      state->exchanged = false;
      return {permuted, perm.counts, state};
    }
    // Every rank's coordinates and per-expert counts (host).
    const std::vector<int64_t>& my_counts = perm.counts.host();
    std::vector<int64_t> mine{etp_.rank(), ep_.rank()};
    mine.insert(mine.end(), my_counts.begin(), my_counts.end());
    const int64_t ep = ep_.size(), etp = etp_.size(), local = shard_.local_experts;
    // counts[t][q][e]: copies rank (etp t, ep q) routed to my local expert e.
    std::vector<std::vector<std::vector<int64_t>>> counts(
        static_cast<size_t>(etp), std::vector<std::vector<int64_t>>(static_cast<size_t>(ep)));
    for (const auto& peer : group_.all_gather_ints(mine)) {
      const auto begin = peer.begin() + 2 + shard_.first_expert;
      counts[static_cast<size_t>(peer[0])][static_cast<size_t>(peer[1])].assign(begin, begin + local);
    }
    const size_t t_me = static_cast<size_t>(etp_.rank());
    send_rows.assign(static_cast<size_t>(ep), 0);
    recv_rows.assign(static_cast<size_t>(ep), 0);
    for (int64_t q = 0; q < ep; ++q) {
      for (int64_t e = 0; e < local; ++e) send_rows[q] += my_counts[static_cast<size_t>(q * local + e)];
      recv_rows[q] = sum_of(counts[t_me][static_cast<size_t>(q)]);
    }
    // Over ep: my copies to the ranks holding their experts; [sum(recv_rows), h] by (q, e).
    const torch::Tensor received = all_to_all(permuted, ep_, recv_rows, send_rows);
    // Over etp: the copies my etp peers received for the same experts; [R, h] by (t, q, e).
    etp_rows.assign(static_cast<size_t>(etp), 0);
    by_expert.sizes.clear();
    for (int64_t t = 0; t < etp; ++t) {
      for (int64_t q = 0; q < ep; ++q) {
        for (int64_t e = 0; e < local; ++e) {
          const int64_t c = counts[static_cast<size_t>(t)][static_cast<size_t>(q)][static_cast<size_t>(e)];
          etp_rows[t] += c;
          by_expert.sizes.push_back(c);
        }
      }
    }
    const torch::Tensor gathered = gather_rows(received, etp_, etp_rows);
    // Chunks (t, q, e) sorted by e: the experts' rows become contiguous.
    by_expert.order.clear();
    std::vector<int64_t> expert_counts(static_cast<size_t>(local), 0);
    for (int64_t e = 0; e < local; ++e) {
      for (int64_t tq = 0; tq < etp * ep; ++tq) {
        const int64_t chunk = tq * local + e;
        by_expert.order.push_back(chunk);
        expert_counts[static_cast<size_t>(e)] += by_expert.sizes[static_cast<size_t>(chunk)];
      }
    }
    Dispatched out{reorder_chunks(gathered, by_expert), expert_counts, state};
    return out;
  }

  torch::Tensor combine(const torch::Tensor& expert_output, const Dispatched& dispatched) override {
    const auto& state = static_cast<const State&>(*dispatched.state);
    if (!state.exchanged) return unpermute(expert_output, state.perm, state.n);
    // Back to (t, q, e) order.
    const torch::Tensor unsorted = reorder_chunks(expert_output, state.by_expert.inverse());  // [R, h]
    // Over etp: sum the partial outputs, keep the rows this rank received.
    const torch::Tensor mine = reduce_scatter_rows(unsorted, etp_, state.etp_rows);  // [sum(recv_rows), h]
    // Over ep: back to the ranks that routed them.
    const torch::Tensor back = all_to_all(mine, ep_, state.send_rows, state.recv_rows);  // [P, h]
    return unpermute(back, state.perm, state.n);
  }

 private:
  Communicator& group_;
  Communicator& ep_;
  Communicator& etp_;
  ExpertShard shard_;
};

}  // namespace

torch::Tensor weighted_sum_copies(const torch::Tensor& rows, const torch::Tensor& weights,
                                  const torch::Tensor& token_index, const torch::Tensor& rows_of_token,
                                  [[maybe_unused]] bool use_kernels) {
  FT_CHECK(rows.dim() == 2 && rows_of_token.dim() == 2 && rows.size(0) == token_index.size(0) &&
               weights.size(0) == rows.size(0) && rows_of_token.numel() == rows.size(0),
           "weighted_sum_copies: rows, weights, token_index and rows_of_token disagree on the number of rows");
#ifdef FOLDTRON_WITH_CUDA
  const bool typed = rows.scalar_type() == torch::kBFloat16 || rows.scalar_type() == torch::kFloat;
  if (use_kernels && rows.is_cuda() && typed) {
    return FusedWeightedSum::apply(rows.contiguous(), weights.to(rows.device(), torch::kFloat).contiguous(),
                                   token_index.to(rows.device(), torch::kLong).contiguous(),
                                   rows_of_token.to(rows.device(), torch::kLong).contiguous());
  }
#endif
  return SumCopies::apply(weighted_rows(rows, weights), token_index, rows_of_token);
}

namespace {

// permute_by_map when the caller promises `k` copies of every token (dropless top-k over all
// experts), without a sort: copy (t, e) goes to row start[e] + (the tokens before t routed to
// e), so the rows come out in (expert, token) order as the sort gives them. That row is one less
// than the running count of the expert-major map flattened, [E' n]: a scan of one dimension,
// which torch runs as one device-wide scan on CUDA. (The running count down the [n, E'] map's
// columns, the same numbers, took 3.2 ms a layer and micro-batch on an H200 at 16,384 tokens
// and 8 experts: torch scans an outer dimension of few columns with little parallelism.) The
// counts stay on the device; their host read, in backward when training, checks the promise by
// their sum (n k). An evaluation without gradients reads them nowhere, and a token with a copy
// too many beside one with a copy too few keeps the sum: those go unchecked, as on the sorted
// path.
Permutation permute_copies(const torch::Tensor& routing_map, const torch::Tensor& probs, int64_t k) {
  const int64_t n = routing_map.size(0), experts_here = routing_map.size(1), total = n * k;
  const torch::Tensor scan =
      routing_map.t().reshape({-1}).to(torch::kLong).cumsum(0).view({experts_here, n});  // [E', n]
  const torch::Tensor ends = scan.select(1, n - 1);                                       // [E'] start[e + 1]
  const torch::Tensor counts = torch::diff(ends, 1, 0, torch::zeros({1}, ends.options()));  // [E']
  const torch::Tensor row_of = scan.t().contiguous() - 1;  // [n, E'] token-major, as the map
  // Each token's k routed experts in expert order: the k smallest rows of its routed columns
  // (the others pushed past every row). Should a token have fewer, its missing rows are
  // clamped to the last, so every index stays inside the tensors, and the counts' check
  // reports the broken promise.
  auto [rows, experts] =  // [n, k] each
      row_of.masked_fill(routing_map.logical_not(), total).topk(k, 1, /*largest=*/false);
  rows.clamp_max_(total - 1);
  Permutation perm;
  perm.counts = ExpertCounts::from_device(counts, total);
  perm.rows_of_token = rows;
  // The flat expert-major index e * n + t of each row, as the sort lists them.
  const torch::Tensor flat = experts * n + torch::arange(n, experts.options()).unsqueeze(1);  // [n, k]
  const torch::Tensor order =
      torch::zeros({total}, flat.options()).scatter_(0, rows.reshape({-1}), flat.reshape({-1}));  // [n k]
  perm.token_index = order.remainder(n);                                // [n k]
  perm.weights = probs.t().reshape({-1}).index_select(0, order);        // [n k]
  return perm;
}

}  // namespace

Permutation permute_by_map(const torch::Tensor& routing_map, const torch::Tensor& probs, int64_t copies_per_token) {
  const int64_t n = routing_map.size(0);
  if (copies_per_token > 0 && n > 0) return permute_copies(routing_map, probs, copies_per_token);
  // Otherwise the number of copies is the counts' sum: a host sync (none for no tokens).
  Permutation perm;
  const int64_t known = copies_per_token > 0 ? n * copies_per_token : -1;
  perm.counts = ExpertCounts::from_device(routing_map.sum(0), known);
  const int64_t total = known >= 0 ? known : sum_of(perm.counts.host());
  // Expert-major flat mask; a stable descending sort lists the routed copies first, in
  // (expert, token) order.
  const torch::Tensor flat = routing_map.t().reshape({-1}).to(torch::kByte);  // [E' * n]
  const torch::Tensor order = std::get<1>(flat.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true)).narrow(0, 0, total);
  perm.token_index = order.remainder(std::max<int64_t>(n, 1));
  perm.weights = probs.t().reshape({-1}).index_select(0, order);
  return perm;
}

Permutation permute_by_slots(const torch::Tensor& slots, const torch::Tensor& valid, const torch::Tensor& probs) {
  Permutation perm;
  perm.token_index = slots.reshape({-1});
  perm.weights = (probs.t().gather(1, slots) * valid.to(probs.scalar_type())).reshape({-1});
  perm.counts = std::vector<int64_t>(static_cast<size_t>(slots.size(0)), slots.size(1));
  return perm;
}

std::unique_ptr<TokenDispatcher> make_dispatcher(Dispatcher kind, ProcessGroups& groups, const ExpertShard& shard) {
  if (kind == Dispatcher::kAllGather) return std::make_unique<AllGatherDispatcher>(groups, shard);
  return std::make_unique<AllToAllDispatcher>(groups, shard);
}

}  // namespace foldtron
