// Dense transformer equivalence: for every tensor/sequence/data-parallel layout of the job's
// world size, the tiny dense model's loss and every gradient (gathered over tp by each
// parameter's split) equal those of the single-process model on the whole global batch, which
// every rank also builds (tp of one rank) from the same seed.
#include <ATen/CPUGeneratorImpl.h>

#include "config/config_load.h"
#include "layers/context.h"
#include "models/decoder_lm.h"
#include "mpi_test.h"
#include "optim/grad_reduce.h"
#include "parallel/process_groups.h"

namespace foldtron::testing {
namespace {

constexpr int64_t kBatch = 4;  // sequences in the global batch
constexpr int64_t kSeq = 16;

ModelConfig tiny_model() {
  ModelConfig model = load_config({"tiny-dense", "", {"model.num_layers=2"}}).model;
  return model;
}

std::unique_ptr<Communicator> self_communicator() {
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_SELF, &comm);
  return std::make_unique<Communicator>("self", comm, std::vector<int64_t>{world_rank()}, comm_options());
}

// A global batch of token ids [kSeq + 1, kBatch], the same on every rank.
torch::Tensor global_tokens() {
  at::Generator generator = at::detail::createCPUGenerator(99);
  return torch::randint(0, 256, {kSeq + 1, kBatch}, generator, torch::kLong);
}

struct Result {
  double loss = 0;
  std::map<std::string, torch::Tensor> grads;  // full (gathered) gradients by parameter name
};

// Loss and gradients of `model` on sequences [first, first+count) of the global batch; the loss
// is the sum of token losses divided by the global token count.
double run_step(DecoderLM& model, int64_t first, int64_t count) {
  const torch::Tensor tokens = global_tokens().narrow(1, first, count).to(device());
  const torch::Tensor ids = tokens.narrow(0, 0, kSeq);         // [s, b]
  const torch::Tensor targets = tokens.narrow(0, 1, kSeq);     // [s, b]
  torch::Tensor loss = model.token_losses(ids, targets).sum() / static_cast<double>(kSeq * kBatch);
  loss.backward();
  return loss.item<double>();
}

TEST(DenseEquivalence, TensorSequenceAndDataParallelMatchSingleProcess) {
  const int world = world_size();
  const ModelConfig model_config = tiny_model();
  // Reference: one rank's model on the whole batch.
  auto self = self_communicator();
  ParamRegistry reference_registry;
  LayerContext reference_ctx{self.get(), false, 1234, device(), torch::kFloat, nullptr, &reference_registry};
  DecoderLM reference(reference_ctx, model_config);
  const double reference_loss = run_step(reference, 0, kBatch);
  std::map<std::string, torch::Tensor> reference_grads;
  for (const auto& item : reference.named_parameters()) reference_grads[item.key()] = item.value().grad();

  for (int64_t tp : {1, 2, 4}) {
    if (world % tp != 0 || kBatch % (world / tp) != 0) continue;
    for (bool sp : {false, true}) {
      if (sp && tp == 1) continue;
      SCOPED_TRACE(fmt::format("world {} tp {} dp {} sequence_parallel {}", world, tp, world / tp, sp));
      const Topology topology(ParallelLayout{world, tp, 1, 1, 1, 1, "tp-cp-ep-dp-pp"});
      ProcessGroups groups(topology, comm_options());
      ParamRegistry registry;
      LayerContext ctx{&groups.tp(), sp, 1234, device(), torch::kFloat, nullptr, &registry};
      DecoderLM model(ctx, model_config);
      const int64_t dp = groups.dp().size();
      const int64_t per_rank = kBatch / dp;
      torch::Tensor loss = torch::full({1}, run_step(model, groups.coords().dp * per_rank, per_rank), torch::kDouble);
      finalize_grads(model, registry, groups);
      groups.dp().all_reduce(loss);
      EXPECT_NEAR(loss.item<double>(), reference_loss, 1e-5 * std::abs(reference_loss));
      for (const auto& item : model.named_parameters()) {
        const ParamInfo info = registry.info(item.value());
        torch::Tensor grad = item.value().grad();
        if (info.tp_split_dim >= 0 && groups.tp().size() > 1) {
          grad = groups.tp().all_gather(grad.movedim(info.tp_split_dim, 0).contiguous()).movedim(0, info.tp_split_dim);
        }
        EXPECT_TRUE(close(grad, reference_grads.at(item.key()), 1e-5, 1e-6)) << item.key();
      }
    }
  }
}

}  // namespace
}  // namespace foldtron::testing
