// Autograd communication mappings (see mappings.h). Each is a torch::autograd::Function whose
// backward calls the conjugate collective on the same group; the group travels through the
// context as a pointer (communicators outlive every graph built on them).
#include "parallel/mappings.h"

#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/communicator.h"

namespace foldtron {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

Communicator& saved_group(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
}

// Chunk `rank` of `n` along `dim` (which n must divide), contiguous.
torch::Tensor chunk_of(const torch::Tensor& x, int64_t dim, Communicator& group) {
  const int64_t n = group.size();
  FT_CHECK(x.size(dim) % n == 0, "dimension " + std::to_string(dim) + " of size " + std::to_string(x.size(dim)) +
                                     " does not split over " + std::to_string(n) + " ranks of group " + group.name());
  return x.chunk(n, dim)[group.rank()].contiguous();
}

// All-gather along `dim` (gathers along dim 0 and moves the pieces into place).
torch::Tensor gather_dim(const torch::Tensor& x, int64_t dim, Communicator& group) {
  if (group.size() == 1) return x;
  if (dim == 0) return group.all_gather(x);
  torch::Tensor moved = x.movedim(dim, 0);                              // [d/n, ...]
  torch::Tensor gathered = group.all_gather(moved);                     // [d, ...] rank-major
  return gathered.movedim(0, dim).contiguous();
}

struct CopyToGroup : torch::autograd::Function<CopyToGroup> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return x.view_as(x);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    torch::Tensor g = grads[0].contiguous().clone();
    saved_group(ctx).all_reduce(g);
    return {g, torch::Tensor()};
  }
};

struct ReduceFromGroup : torch::autograd::Function<ReduceFromGroup> {
  static torch::Tensor forward(AutogradContext*, const torch::Tensor& x, int64_t group) {
    torch::Tensor y = x.contiguous().clone();
    reinterpret_cast<Communicator*>(group)->all_reduce(y);
    return y;
  }
  static tensor_list backward(AutogradContext*, tensor_list grads) { return {grads[0], torch::Tensor()}; }
};

struct ScatterToSequence : torch::autograd::Function<ScatterToSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return chunk_of(x, 0, *reinterpret_cast<Communicator*>(group));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {gather_dim(grads[0].contiguous(), 0, saved_group(ctx)), torch::Tensor()};
  }
};

struct GatherFromSequence : torch::autograd::Function<GatherFromSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group, bool reduce_grad) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["reduce_grad"] = reduce_grad;
    return gather_dim(x, 0, *reinterpret_cast<Communicator*>(group));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    Communicator& group = saved_group(ctx);
    torch::Tensor g = grads[0].contiguous();
    torch::Tensor out = ctx->saved_data["reduce_grad"].toBool() ? group.reduce_scatter(g) : chunk_of(g, 0, group);
    return {out, torch::Tensor(), torch::Tensor()};
  }
};

struct ReduceScatterToSequence : torch::autograd::Function<ReduceScatterToSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return reinterpret_cast<Communicator*>(group)->reduce_scatter(x);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {gather_dim(grads[0].contiguous(), 0, saved_group(ctx)), torch::Tensor()};
  }
};

struct GatherLastDim : torch::autograd::Function<GatherLastDim> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return gather_dim(x, x.dim() - 1, *reinterpret_cast<Communicator*>(group));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {chunk_of(grads[0], grads[0].dim() - 1, saved_group(ctx)), torch::Tensor()};
  }
};

struct ScatterLastDim : torch::autograd::Function<ScatterLastDim> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return chunk_of(x, x.dim() - 1, *reinterpret_cast<Communicator*>(group));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {gather_dim(grads[0].contiguous(), grads[0].dim() - 1, saved_group(ctx)), torch::Tensor()};
  }
};

struct AllToAll : torch::autograd::Function<AllToAll> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               const std::vector<int64_t>& output_rows, const std::vector<int64_t>& input_rows) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["output_rows"] = output_rows;
    ctx->saved_data["input_rows"] = input_rows;
    return reinterpret_cast<Communicator*>(group)->all_to_all(x, input_rows, output_rows);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const std::vector<int64_t> output_rows = ctx->saved_data["output_rows"].toIntVector();
    const std::vector<int64_t> input_rows = ctx->saved_data["input_rows"].toIntVector();
    // The gradient of what arrived goes back where it came from.
    torch::Tensor g = saved_group(ctx).all_to_all(grads[0].contiguous(), output_rows, input_rows);
    return {g, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

struct GatherRows : torch::autograd::Function<GatherRows> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               const std::vector<int64_t>& rows, bool reduce_grad) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["reduce_grad"] = reduce_grad;
    return reinterpret_cast<Communicator*>(group)->all_gather(x.contiguous(), rows);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const std::vector<int64_t> rows = ctx->saved_data["rows"].toIntVector();
    Communicator& group = saved_group(ctx);
    torch::Tensor g = ctx->saved_data["reduce_grad"].toBool()
                          ? group.reduce_scatter(grads[0].contiguous(), rows)
                          : grads[0].narrow(0, rows_before(rows, group.rank()), rows[group.rank()]).contiguous();
    return {g, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

struct SplitRows : torch::autograd::Function<SplitRows> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               const std::vector<int64_t>& rows) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["rows"] = rows;
    const int rank = reinterpret_cast<Communicator*>(group)->rank();
    return x.narrow(0, rows_before(rows, rank), rows[rank]).contiguous();
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const std::vector<int64_t> rows = ctx->saved_data["rows"].toIntVector();
    return {saved_group(ctx).all_gather(grads[0].contiguous(), rows), torch::Tensor(), torch::Tensor()};
  }
};

struct ReduceScatterRows : torch::autograd::Function<ReduceScatterRows> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               const std::vector<int64_t>& rows) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["rows"] = rows;
    return reinterpret_cast<Communicator*>(group)->reduce_scatter(x.contiguous(), rows);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const std::vector<int64_t> rows = ctx->saved_data["rows"].toIntVector();
    return {saved_group(ctx).all_gather(grads[0].contiguous(), rows), torch::Tensor(), torch::Tensor()};
  }
};

int64_t handle(Communicator& group) { return reinterpret_cast<int64_t>(&group); }

}  // namespace

torch::Tensor copy_to_group(const torch::Tensor& x, Communicator& group) {
  return group.size() == 1 ? x : CopyToGroup::apply(x, handle(group));
}
torch::Tensor reduce_from_group(const torch::Tensor& x, Communicator& group) {
  return group.size() == 1 ? x : ReduceFromGroup::apply(x, handle(group));
}
torch::Tensor scatter_to_sequence(const torch::Tensor& x, Communicator& group) {
  return group.size() == 1 ? x : ScatterToSequence::apply(x, handle(group));
}
torch::Tensor gather_from_sequence(const torch::Tensor& x, Communicator& group, bool reduce_grad) {
  return group.size() == 1 ? x : GatherFromSequence::apply(x, handle(group), reduce_grad);
}
torch::Tensor reduce_scatter_to_sequence(const torch::Tensor& x, Communicator& group) {
  return group.size() == 1 ? x : ReduceScatterToSequence::apply(x, handle(group));
}
torch::Tensor gather_last_dim(const torch::Tensor& x, Communicator& group) {
  return group.size() == 1 ? x : GatherLastDim::apply(x, handle(group));
}
torch::Tensor scatter_last_dim(const torch::Tensor& x, Communicator& group) {
  return group.size() == 1 ? x : ScatterLastDim::apply(x, handle(group));
}
torch::Tensor all_to_all(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& output_rows,
                         const std::vector<int64_t>& input_rows) {
  return group.size() == 1 ? x : AllToAll::apply(x, handle(group), output_rows, input_rows);
}
torch::Tensor gather_rows(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& rows,
                          bool reduce_grad) {
  return group.size() == 1 ? x : GatherRows::apply(x, handle(group), rows, reduce_grad);
}
torch::Tensor split_rows(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& rows) {
  return group.size() == 1 ? x : SplitRows::apply(x, handle(group), rows);
}
torch::Tensor reduce_scatter_rows(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& rows) {
  return group.size() == 1 ? x : ReduceScatterRows::apply(x, handle(group), rows);
}

int64_t rows_before(const std::vector<int64_t>& rows, int64_t rank) {
  int64_t offset = 0;
  for (int64_t r = 0; r < rank; ++r) offset += rows[static_cast<size_t>(r)];
  return offset;
}

}  // namespace foldtron
