// Pipeline-parallel schedules and their execution.
//
// A step's work on pipeline rank r is a list of operations: the forward or the backward of one
// micro-batch through one of its local chunks (global virtual stage s = chunk * pp + r; see
// ModelPart). The order of a rank's operations is its schedule:
//   - no pipelining (pp 1): forward and backward of each micro-batch in turn (gradient
//     accumulation);
//   - 1F1B (pp > 1, vpp 1): pp - r - 1 warm-up forwards, then a forward and a backward in turn,
//     then the remaining backwards; at most pp - r micro-batches' activations are alive;
//   - interleaved 1F1B (vpp > 1): micro-batches in groups of pp, each group through chunk 0, then
//     chunk 1, ...; (pp - r - 1) * 2 + (vpp - 1) * pp warm-up forwards, then 1F1B. It needs the
//     micro-batch count divisible by pp;
//   - forward only: each micro-batch through the rank's chunks, no backward.
//
// plan_pipeline() turns the orders of all ranks into lock-step ticks by simulating the pipeline
// with unit-time operations: at each tick a rank runs its next operation if that operation's
// input (an activation from stage s - 1, a gradient from stage s + 1) arrived at an earlier tick,
// and every message produced at tick t is exchanged at the end of tick t, in one batched
// send/receive per rank (on NCCL one group call). Every send is thus matched on its peer in the
// same tick and execution cannot deadlock; an order that could never finish is found by the
// simulation and reported before any rank communicates.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "parallel/stream.h"

namespace foldtron {

class Communicator;

struct PipelineOp {
  bool forward = true;
  int64_t micro = 0;  // micro-batch
  int64_t chunk = 0;  // local chunk on this rank
};

// An activation (forward) or gradient (backward) travelling between two ranks. `chunk` is the
// local chunk on the rank whose tick lists it: the producing op's chunk for a send, the chunk of
// the op that will consume it for a receive.
struct PipelineMessage {
  int64_t peer = 0;
  bool activation = true;
  int64_t micro = 0, chunk = 0;
};

struct PipelineTick {
  bool has_op = false;
  PipelineOp op;
  std::vector<PipelineMessage> sends, recvs;  // exchanged after the op
};

// The operation order of pipeline rank `rank` (see above). The interleaved schedule needs
// `micro_batches` divisible by pp (validate_config checks train.global_batch_size for it).
std::vector<PipelineOp> pipeline_order(int64_t pp, int64_t vpp, int64_t micro_batches, int64_t rank,
                                       bool forward_only);

// Ticks of every rank ([rank][tick], all of one length) for the orders of pipeline_order().
std::vector<std::vector<PipelineTick>> plan_pipeline(int64_t pp, int64_t vpp, int64_t micro_batches,
                                                     bool forward_only);
// The same for any orders (orders[rank]); throws InternalError if they could never finish (a
// deadlock: no rank could run its next operation).
std::vector<std::vector<PipelineTick>> plan_pipeline(const std::vector<std::vector<PipelineOp>>& orders, int64_t pp,
                                                     int64_t vpp, int64_t micro_batches, bool forward_only);

struct PipelineStage {
  // The forward of `op`: `input` holds the tensors received from the stage before (empty on the
  // first stage). Returns the tensors to send on (stream_spec(op.micro)), or on the last stage
  // one loss to backpropagate (with forward_only: anything, it is dropped).
  std::function<TensorList(const PipelineOp& op, const TensorList& input)> forward;
  // The tensors between stages for micro-batch `micro` (every rank can compute it: the data is
  // read alike everywhere).
  std::function<StreamSpec(int64_t micro)> stream_spec;
  // Called before the backward of `op` (may be empty).
  std::function<void(const PipelineOp& op)> before_backward;
};

// Runs this rank's `ticks` (plan_pipeline()[pp_group.rank()]). Backward seeds the last stage's
// loss with 1 and the others with the received gradients of the tensors they sent (a sent tensor
// that needs no gradient gets none); the gradients reach the parameters through autograd.
void run_pipeline(const std::vector<PipelineTick>& ticks, Communicator& pp_group, const PipelineStage& stage,
                  bool forward_only);

}  // namespace foldtron
