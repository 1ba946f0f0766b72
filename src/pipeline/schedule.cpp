// Pipeline schedules and their execution (see pipeline.h).
#include "pipeline/schedule.h"

#include <algorithm>
#include <map>
#include <utility>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/text.h"
#include "parallel/communicator.h"

namespace foldtron {

std::vector<PipelineOp> pipeline_order(int64_t pp, int64_t vpp, int64_t micro_batches, int64_t rank,
                                       bool forward_only) {
  FT_CHECK(pp >= 1 && vpp >= 1 && rank >= 0 && rank < pp && micro_batches >= 1,
           fmt::format("pipeline_order(pp {}, vpp {}, micro-batches {}, rank {})", pp, vpp, micro_batches, rank));
  std::vector<PipelineOp> order;
  if (forward_only) {
    for (int64_t m = 0; m < micro_batches; ++m) {
      for (int64_t v = 0; v < vpp; ++v) order.push_back({true, m, v});
    }
    return order;
  }
  FT_CHECK(vpp == 1 || micro_batches % pp == 0,
           fmt::format("the interleaved schedule needs micro-batches ({}) in groups of pp ({}); validation checks this",
                       micro_batches, pp));
  // The k-th forward (backward) of the rank: micro-batches in groups of pp, each group through
  // the chunks in order (backward: in reverse). With vpp 1 this is micro-batch k, chunk 0.
  const int64_t total = micro_batches * vpp, group = pp * vpp;
  const auto op = [&](int64_t k, bool forward) {
    const int64_t chunk = (k % group) / pp;
    return PipelineOp{forward, (k / group) * pp + k % pp, forward ? chunk : vpp - 1 - chunk};
  };
  const int64_t warmup = std::min(vpp == 1 ? pp - rank - 1 : (pp - rank - 1) * 2 + (vpp - 1) * pp, total);
  for (int64_t k = 0; k < warmup; ++k) order.push_back(op(k, true));
  for (int64_t k = 0; k < total - warmup; ++k) {
    order.push_back(op(warmup + k, true));
    order.push_back(op(k, false));
  }
  for (int64_t k = total - warmup; k < total; ++k) order.push_back(op(k, false));
  return order;
}

std::vector<std::vector<PipelineTick>> plan_pipeline(int64_t pp, int64_t vpp, int64_t micro_batches,
                                                     bool forward_only) {
  std::vector<std::vector<PipelineOp>> orders;
  for (int64_t r = 0; r < pp; ++r) orders.push_back(pipeline_order(pp, vpp, micro_batches, r, forward_only));
  return plan_pipeline(orders, pp, vpp, micro_batches, forward_only);
}

std::vector<std::vector<PipelineTick>> plan_pipeline(const std::vector<std::vector<PipelineOp>>& orders, int64_t pp,
                                                     int64_t vpp, int64_t micro_batches, bool forward_only) {
  FT_CHECK(static_cast<int64_t>(orders.size()) == pp, "plan_pipeline needs one order per pipeline rank");
  const int64_t stages = pp * vpp;
  size_t remaining = 0;
  for (const auto& order : orders) remaining += order.size();
  // The tick at which each (micro-batch, stage) finished its forward / backward; -1: not yet.
  std::vector<int64_t> forward_tick(static_cast<size_t>(micro_batches * stages), -1), backward_tick = forward_tick;
  const auto at = [&](std::vector<int64_t>& ticks, int64_t micro, int64_t stage) -> int64_t& {
    return ticks[static_cast<size_t>(micro * stages + stage)];
  };
  std::vector<size_t> next(static_cast<size_t>(pp), 0);
  std::vector<std::vector<PipelineTick>> plan(static_cast<size_t>(pp));
  for (int64_t t = 0; remaining > 0; ++t) {
    for (auto& ticks : plan) ticks.emplace_back();
    bool ran = false;
    for (int64_t r = 0; r < pp; ++r) {
      const auto& order = orders[static_cast<size_t>(r)];
      size_t& position = next[static_cast<size_t>(r)];
      if (position == order.size()) continue;
      const PipelineOp op = order[position];
      const int64_t stage = op.chunk * pp + r;
      const auto done_before = [&](int64_t tick) { return tick >= 0 && tick < t; };
      const bool ready = op.forward ? stage == 0 || done_before(at(forward_tick, op.micro, stage - 1))
                                    : done_before(at(forward_tick, op.micro, stage)) &&
                                          (stage == stages - 1 || done_before(at(backward_tick, op.micro, stage + 1)));
      if (!ready) continue;
      ++position;
      --remaining;
      ran = true;
      at(op.forward ? forward_tick : backward_tick, op.micro, stage) = t;
      PipelineTick& tick = plan[static_cast<size_t>(r)].back();
      tick.has_op = true;
      tick.op = op;
      // The message this op produces, exchanged at the end of this tick.
      const int64_t to = op.forward ? stage + 1 : stage - 1;
      if (to < 0 || to >= stages) continue;
      const int64_t peer = to % pp;
      tick.sends.push_back({peer, op.forward, op.micro, op.chunk});
      plan[static_cast<size_t>(peer)].back().recvs.push_back({r, op.forward, op.micro, to / pp});
    }
    if (!ran) {
      throw InternalError(fmt::format("pipeline schedule (pp {}, vpp {}, {} micro-batches{}) cannot finish: at tick {} "
                                      "no rank can run its next operation",
                                      pp, vpp, micro_batches, forward_only ? ", forward only" : "", t));
    }
  }
  return plan;
}

void run_pipeline(const std::vector<PipelineTick>& ticks, Communicator& pp_group, const PipelineStage& stage,
                  bool forward_only) {
  struct Slot {
    TensorList activation;  // received inputs (empty on the first stage)
    TensorList gradient;    // received gradients of the outputs, the same specs
    TensorList output;      // kept for backward: the tensors sent on, or the loss
  };
  std::map<std::pair<int64_t, int64_t>, Slot> slots;  // (micro-batch, chunk)
  const auto check_message = [&](const TensorList& tensors, const PipelineOp& op) {
    const StreamSpec spec = stage.stream_spec(op.micro);
    bool ok = tensors.size() == spec.size();
    for (size_t i = 0; ok && i < tensors.size(); ++i) {
      ok = tensors[i].defined() && tensors[i].sizes() == spec[i].shape &&
           tensors[i].scalar_type() == spec[i].options.dtype().toScalarType();
    }
    if (ok) return;
    StreamSpec got;
    for (const torch::Tensor& t : tensors) {
      got.push_back({t.defined() ? t.sizes().vec() : std::vector<int64_t>{},
                     t.defined() ? t.options() : torch::TensorOptions()});
    }
    throw InternalError(fmt::format("pipeline {} of micro-batch {} chunk {} produced {}, but stages exchange {}",
                                    op.forward ? "forward" : "backward", op.micro, op.chunk, spec_text(got),
                                    spec_text(spec)));
  };
  for (const PipelineTick& tick : ticks) {
    TensorList produced;  // this tick's activations or gradients for the next / previous stage
    if (tick.has_op) {
      const PipelineOp& op = tick.op;
      Slot& slot = slots[{op.micro, op.chunk}];
      if (op.forward) {
        if (!forward_only) {
          for (torch::Tensor& t : slot.activation) {
            if (t.is_floating_point()) t.requires_grad_(true);
          }
        }
        TensorList output = stage.forward(op, slot.activation);
        if (!tick.sends.empty()) {
          for (const torch::Tensor& t : output) produced.push_back(t.detach());
          check_message(produced, op);
        }
        if (forward_only) {
          slots.erase({op.micro, op.chunk});
        } else {
          slot.output = std::move(output);
        }
      } else {
        if (stage.before_backward) stage.before_backward(op);
        if (!slot.gradient.empty()) {
          TensorList outputs, grads;
          for (size_t i = 0; i < slot.output.size(); ++i) {
            if (!slot.output[i].requires_grad()) continue;  // no gradient flows through it
            outputs.push_back(slot.output[i]);
            grads.push_back(slot.gradient[i]);
          }
          if (!outputs.empty()) torch::autograd::backward(outputs, grads);
        } else {
          FT_CHECK(slot.output.size() == 1 && slot.output[0].numel() == 1,
                   "the last pipeline stage must return one scalar loss");
          torch::autograd::backward({slot.output[0]});
        }
        if (!tick.sends.empty()) {
          for (const torch::Tensor& input : slot.activation) {
            // An input the stage did not use (or not differentiably) sends zeros.
            produced.push_back(input.grad().defined() ? input.grad() : torch::zeros_like(input));
          }
          check_message(produced, op);
        }
        slots.erase({op.micro, op.chunk});
      }
    }
    if (tick.sends.empty() && tick.recvs.empty()) continue;
    std::vector<P2POp> exchange;
    for (const PipelineMessage& message : tick.sends) {
      // Empty tensors (an encoder output no longer needed while decoding) are not exchanged: both
      // sides know the spec.
      for (const torch::Tensor& t : produced) {
        if (t.numel() > 0) exchange.push_back({true, t, static_cast<int>(message.peer)});
      }
    }
    for (const PipelineMessage& message : tick.recvs) {
      Slot& slot = slots[{message.micro, message.chunk}];
      TensorList& into = message.activation ? slot.activation : slot.gradient;
      into.clear();
      for (const TensorSpec& t : stage.stream_spec(message.micro)) {
        into.push_back(torch::empty(t.shape, t.options));
        if (into.back().numel() > 0) exchange.push_back({false, into.back(), static_cast<int>(message.peer)});
      }
    }
    pp_group.batch_p2p_async(exchange)->wait();
  }
  FT_CHECK(slots.empty(), fmt::format("{} pipeline micro-batch chunks were left without a backward", slots.size()));
}

}  // namespace foldtron
