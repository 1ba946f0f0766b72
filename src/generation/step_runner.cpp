// One decoding step through the pipeline (see step_runner.h).
#include "generation/step_runner.h"

#include <torch/torch.h>

#include "parallel/mappings.h"
#include "parallel/process_groups.h"
#include "pipeline/schedule.h"

namespace foldtron {

StepRunner::StepRunner(Model& model, ProcessGroups& groups)
    : model_(model), groups_(groups), scope_(model.context()) {}

torch::Tensor StepRunner::step(const ModelInputs& inputs, KVCache& cache) {
  const ModelPart& part = model_.part();
  torch::Tensor logits;  // [s, b, Vp/tp] on the last stage
  PipelineStage stage;
  stage.forward = [&](const PipelineOp& op, const TensorList& input) -> TensorList {
    ForwardState state;
    state.cache = &cache;
    TensorList out = model_.forward_chunk(op.chunk, inputs, input, state);
    if (part.has_head(op.chunk)) logits = out.at(0);
    return out;
  };
  stage.stream_spec = [&](int64_t /*micro*/) { return model_.stream_spec(inputs, &cache); };
  Communicator& pp = groups_.pp();
  run_pipeline(plan_pipeline(pp.size(), part.vpp, 1, true)[static_cast<size_t>(pp.rank())], pp, stage, true);
  const int64_t rows = model_.encoder_decoder() ? inputs.decoder_input_ids.size(1) : inputs.input_ids.size(1);
  const int64_t vocab = model_.vocab_size();
  torch::Tensor last;  // [b, V] fp32
  if (part.is_last_stage()) {
    const torch::Tensor full = gather_last_dim(logits[-1].contiguous(), groups_.tp());  // [b, Vp]
    last = full.narrow(1, 0, vocab).to(torch::kFloat).contiguous();
  } else {
    last = torch::empty({rows, vocab}, torch::TensorOptions().dtype(torch::kFloat).device(model_.context().device));
  }
  if (pp.size() > 1) pp.broadcast(last, static_cast<int>(pp.size() - 1));
  return last;
}

}  // namespace foldtron
