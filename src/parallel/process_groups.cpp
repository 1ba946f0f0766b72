// Process groups of the folding topology (see process_groups.h).
#include "parallel/process_groups.h"

#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "config/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "parallel/mpi_runtime.h"

namespace foldtron {

ProcessGroups::ProcessGroups(const Topology& topology, CommOptions options, MPI_Comm base) : topology_(topology) {
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(base, &rank);
  MPI_Comm_size(base, &size);
  if (size != topology_.world()) {
    throw ConfigError("parallel", fmt::format("the layout is for {} ranks but the job has {}", topology_.world(), size),
                      "launch with mpirun -np equal to the layout's world size");
  }
  world_rank_ = rank;
  coords_ = topology_.coords(rank);

  MPI_Comm world_copy;
  mpi_check(MPI_Comm_dup(base, &world_copy), "comm_dup", "world");
  std::vector<int64_t> all(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) all[static_cast<size_t>(r)] = r;
  world_ = std::make_shared<Communicator>("world", world_copy, all, options);

  // Every rank walks the kinds in the same order, so the splits (and NCCL initializations,
  // collective over each new group) line up. Kinds whose groups are identical to an earlier
  // kind's reuse its communicator; that decision is the same on every rank.
  std::map<std::vector<RankGroup>, std::shared_ptr<Communicator>> by_partition;
  // A shared communicator is named by every kind it serves ("dp=moe.ep"), so an error or a
  // report naming it names each role.
  const auto kind_name = [](GroupKind kind) { return std::string(is_moe_group(kind) ? "moe." : "") + group_name(kind); };
  std::map<std::vector<RankGroup>, std::string> names;
  for (int k = 0; k < kNumGroupKinds; ++k) {
    const auto kind = static_cast<GroupKind>(k);
    std::string& name = names[topology_.groups(kind)];
    name += (name.empty() ? "" : "=") + kind_name(kind);
  }
  for (int k = 0; k < kNumGroupKinds; ++k) {
    const auto kind = static_cast<GroupKind>(k);
    const std::vector<RankGroup>& partition = topology_.groups(kind);
    auto found = by_partition.find(partition);
    if (found == by_partition.end()) {
      const RankGroup& mine = topology_.group_of(kind, rank);
      const int color = static_cast<int>(mine.front());  // groups are disjoint: the first rank names one
      const int key = static_cast<int>(std::find(mine.begin(), mine.end(), rank) - mine.begin());
      MPI_Comm comm;
      const std::string& name = names.at(partition);
      mpi_check(MPI_Comm_split(base, color, key, &comm), "comm_split", name);
      auto communicator = std::make_shared<Communicator>(name, comm, mine, options);
      found = by_partition.emplace(partition, communicator).first;
      owned_.push_back(communicator);
    }
    groups_[static_cast<size_t>(k)] = found->second.get();
  }
  log::debug("parallel", "rank {}: {} distinct communicators for {} group kinds", rank, owned_.size() + 1,
             kNumGroupKinds + 1);
}

CommOptions make_comm_options(const ParallelConfig& parallel, bool use_cuda) {
  CommOptions options;
  options.timeout_s = parallel.timeout_s;
  options.cuda_device = use_cuda ? local_cuda_device(parallel.devices_per_node) : -1;
  return options;
}

int local_cuda_device(int64_t devices_per_node) {
  MPI_Comm node;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node), "comm_split_type",
            "node");
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  const int64_t visible = static_cast<int64_t>(torch::cuda::device_count());
  const int64_t per_node = devices_per_node > 0 ? devices_per_node : visible;
  if (per_node < 1) {
    throw CommError("no CUDA device is visible to this rank", "check CUDA_VISIBLE_DEVICES and the GPU allocation");
  }
  if (local_size > per_node) {
    throw UsageError(fmt::format("{} ranks run on this node but it has {} GPUs; the NCCL backend needs a GPU of its "
                                 "own for every rank",
                                 local_size, per_node),
                     fmt::format("start at most {} ranks per node (mpirun -np, srun --ntasks-per-node), or run on the "
                                 "CPU with --device cpu",
                                 per_node));
  }
  return static_cast<int>(local_rank % per_node);
}

}  // namespace foldtron
