// ProcessGroups: this rank's communicators for every group of the folding topology (tp, cp, dp,
// dp_cp, pp, tp_cp, tp_pp, tp_dp_cp, etp, ep, etp_ep, edp, the MoE pp, etp_ep_pp) plus world.
// Built once from a validated layout, collectively over MPI_COMM_WORLD (MPI_Comm_split per group
// kind; kinds with the same members share one communicator), and passed explicitly to every
// component that communicates; there are no global groups.
#pragma once

#include <array>
#include <memory>

#include "parallel/communicator.h"
#include "parallel/topology.h"

namespace foldtron {

struct ParallelConfig;

class ProcessGroups {
 public:
  // Collective over `base` (MPI_COMM_WORLD; MPI_COMM_SELF gives a one-rank job, the
  // single-process reference of the equivalence tests), whose size must equal topology.world().
  // options.cuda_device >= 0 also creates NCCL communicators on that device.
  ProcessGroups(const Topology& topology, CommOptions options, MPI_Comm base = MPI_COMM_WORLD);
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;

  const Topology& topology() const { return topology_; }
  int64_t world_rank() const { return world_rank_; }
  const RankCoords& coords() const { return coords_; }

  Communicator& get(GroupKind kind) const { return *groups_[static_cast<size_t>(kind)]; }
  Communicator& world() const { return *world_; }

  Communicator& tp() const { return get(GroupKind::kTp); }
  Communicator& cp() const { return get(GroupKind::kCp); }
  Communicator& dp() const { return get(GroupKind::kDp); }
  Communicator& dp_cp() const { return get(GroupKind::kDpCp); }
  Communicator& pp() const { return get(GroupKind::kPp); }
  Communicator& tp_cp() const { return get(GroupKind::kTpCp); }
  Communicator& tp_pp() const { return get(GroupKind::kTpPp); }
  Communicator& etp() const { return get(GroupKind::kEtp); }
  Communicator& ep() const { return get(GroupKind::kEp); }
  Communicator& etp_ep() const { return get(GroupKind::kEtpEp); }
  Communicator& edp() const { return get(GroupKind::kEdp); }

 private:
  Topology topology_;
  int64_t world_rank_ = 0;
  RankCoords coords_;
  std::vector<std::shared_ptr<Communicator>> owned_;
  std::array<Communicator*, kNumGroupKinds> groups_{};
  std::shared_ptr<Communicator> world_;
};

// CommOptions from the config: parallel.timeout_s, and with `use_cuda` this rank's device by
// local_cuda_device(parallel.devices_per_node). Collective over MPI_COMM_WORLD when use_cuda.
CommOptions make_comm_options(const ParallelConfig& parallel, bool use_cuda);

// The CUDA device of this rank: its index among the ranks of its node, modulo the devices per
// node (0: all devices CUDA reports). Collective over MPI_COMM_WORLD.
int local_cuda_device(int64_t devices_per_node);

}  // namespace foldtron
