// Helpers for multi-rank gtest binaries run under mpirun (see mpi_test_main.cpp): the device the
// tests run on (--device=cpu|cuda), the world communicator, and deterministic per-rank data.
#pragma once

#include <memory>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "parallel/communicator.h"
#include "parallel/sharding.h"

namespace foldtron {
class ProcessGroups;
}  // namespace foldtron

namespace foldtron::testing {

// The device of this rank's tensors: CPU (MPI backend) or this rank's GPU (NCCL backend).
torch::Device device();
// CommOptions for this run (timeout 45 s; the CUDA device when --device=cuda).
CommOptions comm_options();
int world_rank();
int world_size();
// A communicator over all ranks (created once).
Communicator& world();

// A deterministic tensor of `shape`, the same wherever it is built for the same `seed`: every
// rank can build every other rank's input and compute the expected result alone.
torch::Tensor data(int64_t seed, at::IntArrayRef shape, torch::ScalarType dtype = torch::kFloat);

// The global tensor of a parameter's shard (or of its gradient) `shard` on every rank: gathered
// over its split group (tp, or etp for experts) by `info` (padding rows dropped), then experts
// over ep. Collective over those groups; on the CPU.
torch::Tensor gather_full(const torch::Tensor& shard, const ParamInfo& info, ProcessGroups& groups);

// Expects a and b (moved to the CPU) to be close; prints the worst difference otherwise.
::testing::AssertionResult close(const torch::Tensor& a, const torch::Tensor& b, double rtol = 1e-6,
                                 double atol = 1e-6);

}  // namespace foldtron::testing
