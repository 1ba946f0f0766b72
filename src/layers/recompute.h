// Activation recomputation and losses computed inside layers.
//
// checkpoint(fn, inputs, rng) runs fn without autograd, so none of its intermediate activations
// are kept, only its inputs. In backward it restores the RNG streams to their state at that
// forward (the same dropout masks), runs fn again with autograd and backpropagates through it:
// the inputs get their gradients, and parameters used by fn get theirs in that inner backward
// (their gradient-accumulator hooks fire there, so bucketed reduction is unaffected). Collectives
// inside fn run again in backward, on every rank alike.
//
// attach_loss_gradient(x, loss, scale) returns x unchanged; its backward also sends gradient
// `scale` into `loss`. A loss computed inside a layer (the router's load-balancing and z-loss)
// reaches backward this way even when its layer is recomputed (the forward's loss has no graph)
// or lives on an earlier pipeline stage than the language-model loss.
#pragma once

#include <functional>
#include <vector>

#include <torch/types.h>

namespace foldtron {

class RngTracker;

using CheckpointFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// fn's outputs; without grad mode this is just fn(inputs). `rng` may be null (no dropout).
std::vector<torch::Tensor> checkpoint(CheckpointFn fn, const std::vector<torch::Tensor>& inputs, RngTracker* rng);

// Whether this thread is re-running a checkpointed function: statistics gathered per forward
// (the routers' expert counts) must not count it twice.
bool recomputing();

// Checkpointed regions recomputed in backward so far in this process (tests assert that
// recomputation ran).
int64_t recompute_count();

torch::Tensor attach_loss_gradient(const torch::Tensor& x, const torch::Tensor& loss, double scale);

}  // namespace foldtron
