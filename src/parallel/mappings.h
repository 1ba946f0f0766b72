// Autograd communication mappings: Megatron-Core's conjugate pairs, each an autograd function
// whose backward is the adjoint of its forward, over the group it is given. Shapes use the
// [s, b, h] activation convention: sequence parallelism splits dim 0, tensor parallelism of a
// linear layer's output splits the last dim.
//
//   mapping                      forward                 backward             typical group
//   copy_to_group                identity                all-reduce           tp (enter a TP region)
//   reduce_from_group            all-reduce              identity             tp (leave a TP region)
//   scatter_to_sequence          keep my dim-0 chunk     all-gather dim 0     tp (enter SP)
//   gather_from_sequence         all-gather dim 0        reduce-scatter dim 0 tp (SP -> TP region)
//   reduce_scatter_to_sequence   reduce-scatter dim 0    all-gather dim 0     tp (TP region -> SP)
//   gather_last_dim              all-gather last dim     keep my chunk        tp (gather_output)
//   scatter_last_dim             keep my chunk           all-gather last dim  tp
//   all_to_all                   all-to-all, splits      all-to-all, swapped  ep (token dispatch)
//   gather_rows                  variable all-gather     variable reduce-scat etp_ep (all-gather dispatcher)
//                                                        (or keep my rows)    tp (MoE tokens without SP)
//   split_rows                   keep my rows            variable all-gather  tp (MoE tokens without SP)
//   reduce_scatter_rows          variable reduce-scat    variable all-gather  etp_ep / etp (combine)
#pragma once

#include <vector>

#include <torch/types.h>

namespace foldtron {

class Communicator;

// [s, ...] -> [s, ...]; the gradient is all-reduced over `group`.
torch::Tensor copy_to_group(const torch::Tensor& x, Communicator& group);
// [s, ...] partial sums -> [s, ...] summed over `group`; the gradient passes through.
torch::Tensor reduce_from_group(const torch::Tensor& x, Communicator& group);
// [s, ...] -> [s/n, ...] this rank's chunk; the gradient is all-gathered.
torch::Tensor scatter_to_sequence(const torch::Tensor& x, Communicator& group);
// [s/n, ...] -> [s, ...]; the gradient is reduce-scattered (summed: every rank's consumers
// contributed), or only split when `reduce_grad` is false (the consumer was replicated).
torch::Tensor gather_from_sequence(const torch::Tensor& x, Communicator& group, bool reduce_grad = true);
// [s, ...] partial sums -> [s/n, ...] summed chunk; the gradient is all-gathered.
torch::Tensor reduce_scatter_to_sequence(const torch::Tensor& x, Communicator& group);
// [..., h/n] -> [..., h]; the gradient keeps this rank's chunk.
torch::Tensor gather_last_dim(const torch::Tensor& x, Communicator& group);
// [..., h] -> [..., h/n]; the gradient is all-gathered.
torch::Tensor scatter_last_dim(const torch::Tensor& x, Communicator& group);
// [sum(input_rows), ...] -> [sum(output_rows), ...]; backward sends gradients back with the
// splits swapped.
torch::Tensor all_to_all(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& output_rows,
                         const std::vector<int64_t>& input_rows);
// [rows[rank], ...] -> [sum(rows), ...] concatenated in rank order; the gradient is summed over
// the group and each rank keeps its rows, or (reduce_grad false: the consumer was replicated)
// each rank only keeps its rows.
torch::Tensor gather_rows(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& rows,
                          bool reduce_grad = true);
// [sum(rows), ...] -> [rows[rank], ...] this rank's rows; the gradient is all-gathered.
torch::Tensor split_rows(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& rows);
// [sum(rows), ...] partial sums -> [rows[rank], ...] summed over the group; the gradient is
// all-gathered.
torch::Tensor reduce_scatter_rows(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& rows);

// The first row of `rank` when the ranks hold rows[0], rows[1], ... in order.
int64_t rows_before(const std::vector<int64_t>& rows, int64_t rank);

}  // namespace foldtron
