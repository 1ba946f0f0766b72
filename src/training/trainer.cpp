// The training loop (see trainer.h).
#include "training/trainer.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/fault.h"
#include "core/log.h"
#include "core/torch_compat.h"
#include "generation/sample.h"
#include "layers/context_parallel.h"
#include "layers/recompute.h"
#include "moe/moe_layer.h"
#include "parallel/process_groups.h"
#include "pipeline/schedule.h"
#include "training/flops.h"
#include "training/lm_task.h"

namespace foldtron {
namespace {

// Whether this LibTorch can write a trace (Kineto is in the CUDA wheels, not in Debian's build).
bool trace_supported() {
  try {
    torch_compat::start_trace(false);
    torch_compat::stop_trace("/dev/null");
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

double sum_of(const std::vector<torch::Tensor>& terms) {
  return terms.empty() ? 0.0 : torch::cat(terms).sum().item<double>();
}

}  // namespace

// This rank's terms of a step, on the device until the step ends (no host read per micro-batch).
struct Trainer::Sums {
  std::vector<torch::Tensor> loss, aux, z;                      // [1] each
  std::map<std::string, std::vector<torch::Tensor>> metrics;    // by name, [1] each
  double data_seconds = 0;                                      // host time making batches
};

Trainer::Trainer(TrainState& state, Task& task) : state_(state), task_(task) {
  const TrainConfig& t = state.config.train;
  dp_ = state.groups.dp().size();
  per_rank_ = t.global_batch_size / dp_;  // validated: divisible by micro * dp
  micro_batches_ = per_rank_ / t.micro_batch_size;
}

const Batch& Trainer::micro_batch(const GlobalBatch& global, int64_t micro, Sums& sums) {
  const auto it = batches_.find(micro);
  if (it != batches_.end()) return it->second;
  const TrainConfig& t = state_.config.train;
  ProcessGroups& groups = state_.groups;
  const int64_t first = global.first + groups.coords().dp * per_rank_ + micro * t.micro_batch_size;
  // Made on the host and copied from pinned memory without waiting: a copy from pageable memory
  // would wait for every kernel queued before it, and the loader's time would include the GPU's.
  const auto started = std::chrono::steady_clock::now();
  Batch batch = task_.batch(global.split, first, t.micro_batch_size, torch::kCPU);
  const auto to_device = [&](torch::Tensor& x) {
    if (!x.defined() || x.device() == state_.device) return;
    x = state_.device.is_cuda() ? x.pin_memory().to(state_.device, /*non_blocking=*/true) : x.to(state_.device);
  };
  ModelInputs& in = batch.inputs;
  for (torch::Tensor* x : {&in.input_ids, &in.positions, &in.mask, &in.languages, &in.decoder_input_ids,
                           &in.decoder_positions, &in.decoder_mask, &in.decoder_languages, &batch.labels,
                           &batch.objectives, &batch.weights, &batch.objective_units}) {
    to_device(*x);
  }
  sums.data_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const int64_t cp = groups.cp().size();
  if (cp > 1) {
    // This rank's chunks of every sequence-first tensor (validation keeps cp to decoder-only models).
    const torch::Tensor positions = cp_positions(batch.inputs.input_ids.size(0), cp, groups.cp().rank(), state_.device);
    const auto local = [&](const torch::Tensor& x) { return x.defined() ? x.index_select(0, positions) : x; };
    batch.inputs.input_ids = local(batch.inputs.input_ids);
    batch.inputs.mask = local(batch.inputs.mask);
    batch.inputs.positions = local(batch.inputs.positions);
    batch.labels = local(batch.labels);
  }
  return batches_.emplace(micro, std::move(batch)).first->second;
}

void Trainer::forward_backward(Sums& sums, const GlobalBatch& global, double units, bool forward_only) {
  Model& model = *state_.model;
  ProcessGroups& groups = state_.groups;
  const ModelPart& part = model.part();
  // Router losses are per micro-batch (each rank holds a share): averaged over all of them. Their
  // gradient enters backward through the MoE layers' outputs.
  const double aux_scale = 1.0 / static_cast<double>(micro_batches_ * dp_);
  model.set_router_loss_scale(aux_scale);
  PipelineStage stage;
  stage.forward = [&](const PipelineOp& op, const TensorList& input) -> TensorList {
    const Batch& batch = micro_batch(global, op.micro, sums);
    ForwardState forward_state;
    TensorList out = model.forward_chunk(op.chunk, batch.inputs, input, forward_state);
    if (forward_state.aux_loss.defined()) sums.aux.push_back(forward_state.aux_loss.reshape({1}) * aux_scale);
    if (forward_state.z_loss.defined()) sums.z.push_back(forward_state.z_loss.reshape({1}) * aux_scale);
    if (!part.has_head(op.chunk)) return out;
    LossTerms terms = task_.loss(out.at(0), batch, units, groups.tp(), model.vocab_size());
    if (!forward_only && fault_at("loss")) terms.loss = terms.loss * std::numeric_limits<double>::quiet_NaN();
    sums.loss.push_back(terms.loss.detach().to(torch::kDouble).reshape({1}));
    for (const auto& [name, value] : terms.metrics) {
      sums.metrics[name].push_back(value.detach().to(torch::kDouble).reshape({1}));
    }
    return {terms.loss};
  };
  stage.stream_spec = [&](int64_t micro) { return model.stream_spec(micro_batch(global, micro, sums).inputs); };
  // Each chunk's last backward (micro-batch M-1 in every schedule) reduces buckets as they fill
  // (a bucket that spans two chunks starts after the later of their last backwards).
  stage.before_backward = [&](const PipelineOp& op) { state_.buffers->set_sync(op.micro + 1 == micro_batches_); };
  const int64_t pp = groups.pp().size();
  run_pipeline(plan_pipeline(pp, part.vpp, micro_batches_, forward_only)[static_cast<size_t>(groups.pp().rank())],
               groups.pp(), stage, forward_only);
}

torch::Tensor Trainer::reduce_task_terms(Sums& sums) {
  ProcessGroups& groups = state_.groups;
  // The global sums: the last stage's sums over dp x cp, then to every stage; the task's loss
  // first, then its metrics in the order it names them (the same on every rank).
  const std::vector<std::string> names = task_.metric_names();
  torch::Tensor values = torch::zeros({1 + static_cast<int64_t>(names.size())}, torch::kDouble);
  values[0] = sum_of(sums.loss);
  for (size_t i = 0; i < names.size(); ++i) values[static_cast<int64_t>(i) + 1] = sum_of(sums.metrics[names[i]]);
  groups.dp_cp().all_reduce(values);
  groups.pp().all_reduce(values);
  return values;
}

void Trainer::reduce(Sums& sums, StepRecord& record) {
  ProcessGroups& groups = state_.groups;
  const std::vector<std::string> names = task_.metric_names();
  const torch::Tensor values = reduce_task_terms(sums);  // the global means (each share was divided)
  // [load balancing, z]: shares summed over tp x cp, micro-batch means over dp, layers over pp.
  torch::Tensor router_sums = torch::tensor({sum_of(sums.aux), sum_of(sums.z)}, torch::kDouble);
  groups.world().all_reduce(router_sums);
  const double grad_norm = global_grad_norm(*state_.buffers, state_.model->registry(), groups);

  record.lm_loss = values[0].item<double>();
  for (size_t i = 0; i < names.size(); ++i) record.metrics[names[i]] = values[static_cast<int64_t>(i) + 1].item<double>();
  record.aux_loss = router_sums[0].item<double>();
  record.z_loss = router_sums[1].item<double>();
  record.loss = record.lm_loss + record.aux_loss + record.z_loss;
  record.grad_norm = grad_norm;
}

void Trainer::update(StepRecord& record) {
  const TrainConfig& t = state_.config.train;
  if (!std::isfinite(record.loss) || !std::isfinite(record.grad_norm)) {
    record.skipped = true;
    ++state_.bad_steps_in_a_row;
    log::warning("train", "step {}: loss {} / grad norm {} is not finite; skipping the update ({} in a row)",
                 record.step, record.loss, record.grad_norm, state_.bad_steps_in_a_row);
    if (state_.bad_steps_in_a_row >= t.max_bad_steps) {
      throw TrainingError(fmt::format("{} steps in a row had a non-finite loss or gradient", state_.bad_steps_in_a_row),
                          "lower train.lr, raise lr_warmup_iters, or check the data; train.max_bad_steps sets "
                          "how many are tolerated");
    }
    return;
  }
  state_.bad_steps_in_a_row = 0;
  const double scale = t.clip_grad > 0 ? std::min(1.0, t.clip_grad / (record.grad_norm + 1e-6)) : 1.0;
  state_.optimizer->step(record.lr, scale);
}

StepRecord Trainer::step() {
  const TrainConfig& t = state_.config.train;
  const bool cuda = state_.device.is_cuda();
  const auto now = [&] {
    if (cuda) torch::cuda::synchronize();
    return std::chrono::steady_clock::now();
  };
  const auto start = std::chrono::steady_clock::now();
  set_activity(fmt::format("step {}", state_.step + 1));
  for (const auto& hook : hooks_) hook->before_step(state_);
  StepRecord record;
  record.step = state_.step + 1;
  record.lr = learning_rate(t, state_.step);
  task_.prepare(Split::kTrain, state_.consumed_samples, t.global_batch_size, *state_.model, state_.groups);
  record.tokens = static_cast<int64_t>(task_.tokens(state_.consumed_samples, t.global_batch_size));
  const double units = task_.loss_units(Split::kTrain, state_.consumed_samples, t.global_batch_size);
  batches_.clear();
  state_.buffers->zero_grads();
  Sums sums;
  forward_backward(sums, {Split::kTrain, state_.consumed_samples}, units, false);
  const auto computed = now();
  state_.buffers->finish_grad_sync();
  reduce(sums, record);
  const auto reduced = now();
  update(record);
  ++state_.step;
  state_.consumed_samples += t.global_batch_size;
  for (const auto& hook : hooks_) hook->after_step(state_, record);
  batches_.clear();
  const auto end = now();
  record.step_time_s = std::chrono::duration<double>(end - start).count();
  record.fwd_bwd_s = std::chrono::duration<double>(computed - start).count();
  record.grad_reduce_s = std::chrono::duration<double>(reduced - computed).count();
  record.optimizer_s = std::chrono::duration<double>(end - reduced).count();
  record.data_s = sums.data_seconds;
  record.tokens_per_s = static_cast<double>(record.tokens) / record.step_time_s;
  const double flops = task_.flops(state_.consumed_samples - t.global_batch_size, t.global_batch_size);
  record.tflops_per_gpu =
      flops / record.step_time_s / static_cast<double>(state_.groups.world().size()) / 1e12;
  record.mfu = record.tflops_per_gpu / state_.config.logging.peak_tflops;
  record.mem_gb = cuda ? torch_compat::cuda_peak_memory_gb(state_.device.index()) : resident_memory_gb();
  return record;
}

EvalRecord Trainer::evaluate(Split split) {
  const TrainConfig& t = state_.config.train;
  const auto start = std::chrono::steady_clock::now();
  set_activity(fmt::format("the {} evaluation after step {}", split_name(split), state_.step));
  if (task_.num_samples(split) == 0) {
    throw DataError(fmt::format("the {} split of the data has no samples to evaluate", split_name(split)),
                    "give it a share in data.split (e.g. 969,30,1) and enough documents for one window");
  }
  EvalRecord record;
  record.step = state_.step;
  record.split = split_name(split);
  record.samples = t.eval_iters * t.global_batch_size;
  record.units = task_.loss_units(split, 0, record.samples);
  // Dropout off while evaluating; the model's mode is restored however this ends.
  Model& model = *state_.model;
  struct ModeGuard {
    Model& model;
    bool training;
    ~ModeGuard() { model.train(training); }
  } guard{model, model.is_training()};
  model.eval();
  double total = 0;
  {
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < t.eval_iters; ++i) {
      task_.prepare(split, i * t.global_batch_size, t.global_batch_size, model, state_.groups);
      batches_.clear();
      Sums sums;
      forward_backward(sums, {split, i * t.global_batch_size}, record.units, true);
      total += reduce_task_terms(sums)[0].item<double>();
    }
    batches_.clear();
  }
  record.loss = total;
  if (state_.device.is_cuda()) torch::cuda::synchronize();
  record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return record;
}

void Trainer::log_start() const {
  const Config& config = state_.config;
  ProcessGroups& groups = state_.groups;
  const Model& model = *state_.model;
  int64_t local_params = 0;
  for (const auto& p : model.parameters()) local_params += p.numel();
  log::info("train", "data: {}", task_.describe());
  if (config.train.eval_interval > 0) {
    log::info("train", "validation every {} steps and after the last: {} global batches ({} samples) of the valid split",
              config.train.eval_interval, config.train.eval_iters,
              config.train.eval_iters * config.train.global_batch_size);
  }
  log::info("train", "model: {} {}{} layers, hidden {}, {} parameters on rank 0; world {} = tp {} x cp {} x dp {} x pp {}{}",
            enum_name(config.model.architecture),
            config.model.encoder_layers > 0 ? fmt::format("{} encoder + ", config.model.encoder_layers) : "",
            config.model.num_layers, config.model.hidden_size, local_params, groups.world().size(), groups.tp().size(),
            groups.cp().size(), dp_, groups.pp().size(),
            config.moe.enabled() ? fmt::format("; experts: {} MoE layers of {} experts top-{}, etp {} x ep {} x edp {}",
                                               num_moe_layers(config), config.moe.num_experts, config.moe.topk,
                                               groups.etp().size(), groups.ep().size(), groups.edp().size())
                                 : std::string());
  log::info("train", "optimizer: AdamW, {:.3f} GiB of state on this rank (fp32 main weights, {} moments){}; {:.3f} GiB "
                     "of gradient buffers ({} main gradients) in {} buckets, reduced {}",
            static_cast<double>(state_.optimizer->state_bytes()) / (1 << 30), enum_name(config.train.adam_moments_dtype),
            state_.buffers->sharded() ? " (distributed: sharded over dp_cp / edp)" : "",
            static_cast<double>(state_.buffers->grad_bytes()) / (1 << 30),
            enum_name(config.train.main_grads_dtype),  // bf16 only for bf16 parameters (validated)
            state_.buffers->num_buckets(),
            config.parallel.overlap_grad_reduce ? "during backward" : "after backward");
  log::info("train", "global batch {} = micro-batch {} x {} micro-batches x dp {}; {} steps; hooks: {}",
            config.train.global_batch_size, config.train.micro_batch_size, micro_batches_, dp_,
            config.train.train_iters, [&] {
              std::string names;
              for (const auto& hook : hooks_) names += (names.empty() ? "" : ", ") + hook->name();
              return names.empty() ? std::string("none") : names;
            }());
  const ModelPart& part = model.part();
  if (part.pp > 1) {
    std::string chunks;
    for (int64_t v = 0; v < part.num_chunks(); ++v) {
      const int64_t first_layer = part.begin(v), last_layer = part.end(v) - 1;
      chunks += (v ? ", " : "") + (first_layer == last_layer ? fmt::format("layer {}", first_layer)
                                                             : fmt::format("layers {}-{}", first_layer, last_layer));
    }
    log::info("train", "pipeline: pp {} x vpp {}, {} schedule; rank 0 holds {}", part.pp, part.vpp,
              part.vpp > 1 ? "interleaved 1F1B" : "1F1B", chunks);
  }
}

std::ofstream Trainer::open_metrics() const {
  const std::string& path = state_.config.logging.metrics_file;
  std::vector<std::string> kept;
  if (state_.step > 0) {
    // Resumed: keep the records up to the loaded step (the interrupted run may have logged past it).
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
      if (!record.is_discarded() && record.value("step", int64_t{0}) <= state_.step) kept.push_back(line);
    }
  }
  std::ofstream out(path, std::ios::trunc);
  if (!out) {
    throw IoError(fmt::format("cannot write the metrics file '{}'", path), "check that its folder exists and is writable");
  }
  for (const std::string& line : kept) out << line << "\n";
  out.flush();
  return out;
}

void Trainer::survive_failed_save(const CheckpointError& error) {
  if (state_.config.checkpoint.on_save_error != SaveErrorPolicy::kWarn) throw;  // called in a catch block
  ++failed_saves_;
  saved_step_ = -1;  // the failed save may have been this step's
  log::warning("checkpoint", "a save failed and training goes on (checkpoint.on_save_error: warn; {} failed in this "
                             "run; the last complete checkpoint stays the one to resume from): {}",
               failed_saves_, error.what());
}

void Trainer::complete_save(bool wait) {
  try {
    checkpointer_->finish(wait);
  } catch (const CheckpointError& error) {
    survive_failed_save(error);
  }
}

bool Trainer::checkpoint_after_step() {
  if (checkpointer_ == nullptr) return false;
  // Every rank must agree to stop: a signal may reach only some of them.
  torch::Tensor stop = torch::full({1}, stop_requested() ? 1.0 : 0.0, torch::kDouble);
  state_.groups.world().all_reduce(stop, ReduceOp::kMax);
  const bool stopping = stop.item<double>() > 0;
  const int64_t interval = state_.config.checkpoint.save_interval;
  if (!stopping && !(interval > 0 && state_.step % interval == 0)) {
    complete_save(false);  // an asynchronous save that has finished writing completes here
    return false;
  }
  complete_save(true);  // an earlier save still writing completes first: under warn its failure costs not this save
  saved_step_ = state_.step;
  if (stopping) {
    // The save a preemption leaves time for: a failure here always ends the job.
    checkpointer_->save();
    checkpointer_->finish(true);
    log::warning("train", "stopping after step {} on SIGTERM/SIGINT; the checkpoint of this step is saved in '{}' "
                          "(resume with --load {})",
                 state_.step, state_.config.checkpoint.save, state_.config.checkpoint.save);
    return true;
  }
  try {
    checkpointer_->save();
  } catch (const CheckpointError& error) {
    survive_failed_save(error);
  }
  return false;
}

namespace {

// Where the time of the steps after the first (start-up) went, for the closing log line.
struct StepTimes {
  int64_t steps = 0;
  double time = 0, compute = 0, reduce = 0, update = 0;

  void add(const StepRecord& record) {
    if (steps++ == 0) return;
    time += record.step_time_s;
    compute += record.fwd_bwd_s;
    reduce += record.grad_reduce_s;
    update += record.optimizer_s;
  }
  void log() const {
    if (steps < 2) return;
    const double n = static_cast<double>(steps - 1);
    log::info("train", "mean step after the first: {:.4f} s = forward+backward {:.4f} s + gradient reduction and norm "
                       "{:.4f} s + optimizer {:.4f} s",
              time / n, compute / n, reduce / n, update / n);
  }
};

// The peak memory of this rank against the states it must hold; the rest is activations,
// communication and workspace buffers and the caching allocator's slack (on a CPU, the whole
// process: code, libraries, MPI).
void log_memory(const TrainState& state) {
  constexpr double kGiB = 1 << 30;
  double params = 0;
  for (const auto& p : state.model->parameters()) params += static_cast<double>(p.numel() * p.element_size());
  const double grads = static_cast<double>(state.buffers->grad_bytes());
  const double optimizer = static_cast<double>(state.optimizer->state_bytes());
  const bool cuda = state.device.is_cuda();
  const double peak = cuda ? torch_compat::cuda_peak_memory_gb(state.device.index()) : resident_memory_gb();
  const double states = (params + grads + optimizer) / kGiB;
  log::info("train",
            "memory on this rank: peak {:.2f} GiB ({}) = states {:.2f} GiB (parameters {:.2f}, gradient buffers {:.2f}, "
            "optimizer {:.2f}) + the rest {:.2f} GiB ({})",
            peak, cuda ? "the GPU's allocator" : "the process's resident set", states, params / kGiB, grads / kGiB,
            optimizer / kGiB, peak - states,
            cuda ? "activations, communication and workspace buffers, cached blocks"
                 : "activations, buffers, code and libraries");
}

}  // namespace

std::vector<StepRecord> Trainer::run(bool keep_records) {
  const Config& config = state_.config;
  const bool rank0 = state_.groups.world_rank() == 0;
  if (config.logging.profile_step > 0 && rank0 && !trace_supported()) {
    throw ConfigError("logging.profile_step", "this LibTorch was built without Kineto, so no trace can be written",
                      "profile with a torch build that has it (the CUDA wheel: scripts/gpu_build.sh), or set "
                      "logging.profile_step: 0");
  }
  log_start();
  std::ofstream metrics;
  if (rank0 && !config.logging.metrics_file.empty()) metrics = open_metrics();
  const int64_t total = config.train.train_iters;
  const int64_t first_step = state_.step;
  std::vector<StepRecord> records;
  StepTimes times;
  double elapsed = 0;
  while (state_.step < total) {
    const bool traced = rank0 && state_.step + 1 == config.logging.profile_step;
    if (traced) {
      if (state_.device.is_cuda()) torch::cuda::synchronize();
      torch_compat::start_trace(state_.device.is_cuda());
    }
    StepRecord record = step();
    if (traced) {
      torch_compat::stop_trace(config.logging.profile_file);
      log::info("train", "step {} traced into {}", record.step, config.logging.profile_file);
    }
    elapsed += record.step_time_s;
    times.add(record);
    if (record.step % config.logging.log_interval == 0 || record.step == total) {
      const double eta = elapsed / static_cast<double>(times.steps) * static_cast<double>(total - record.step);
      log::info("train", "{}", progress_line(record, total, eta, config.moe.enabled(), config.moe.z_loss_coeff > 0));
      if (metrics.is_open()) metrics << metrics_json(record) << "\n" << std::flush;
    }
    const int64_t done = record.step;
    if (keep_records) records.push_back(std::move(record));
    // A stop signal saves first and skips the evaluation (preemption leaves little time).
    if (checkpoint_after_step()) {
      stopped_ = true;
      break;
    }
    const int64_t eval_interval = config.train.eval_interval;
    if (eval_interval > 0 && (done % eval_interval == 0 || done == total)) {
      const EvalRecord eval = evaluations_.emplace_back(evaluate(Split::kValid));
      log::info("train", "validation after step {}: loss {:.4f} | perplexity {:.3f} | {} samples, {:.0f} tokens, {:.2f} s",
                eval.step, eval.loss, std::exp(eval.loss), eval.samples, eval.units, eval.seconds);
      if (metrics.is_open()) metrics << metrics_json(eval) << "\n" << std::flush;
    }
  }
  if (checkpointer_ != nullptr) {
    if (!stopped_) {
      complete_save(true);  // a periodic save still writing; then the final save, whose failure ends the job
      if (state_.step > first_step && saved_step_ != state_.step) checkpointer_->save();
    }
    checkpointer_->finish(true);
  }
  times.log();
  log_memory(state_);
  return records;
}

namespace {

std::unique_ptr<Task> make_task(const Config& config, const TaskFactory& factory) {
  if (factory) return factory(config);
  if (config.model.encoder_decoder()) {
    throw ConfigError("model.architecture",
                      fmt::format("'{}' is an encoder-decoder, which the language-model task cannot train",
                                  enum_name(config.model.architecture)),
                      "set translation.data to train it on the translation task, or train a decoder-only family "
                      "(llama, mixtral, qwen2_moe, qwen3_moe)");
  }
  return std::make_unique<LmTask>(config);
}

// The startup line: where the time before the first step went.
void log_startup(const TrainState& state, double total_s, double data_s, double load_s) {
  const TrainState::Startup& times = state.startup;
  log::info("train",
            "startup {:.1f} s: model {:.1f} s (initial values: {:.1f} M drawn on the host by {} thread{} in {:.1f} s, "
            "copied {:.1f} s), gradient buffers and optimizer {:.1f} s, data {:.1f} s{}",
            total_s, times.model_s, static_cast<double>(times.init.values) / 1e6, times.init.threads,
            times.init.threads == 1 ? "" : "s", times.init.draw_s, times.init.copy_s, times.optimizer_s, data_s,
            state.config.checkpoint.load.empty() ? std::string() : fmt::format(", checkpoint load {:.1f} s", load_s));
}

}  // namespace

TrainResult train(const Config& config, ProcessGroups& groups, const TrainOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  TrainState state(config, groups, options.device);
  const auto built = Clock::now();
  const std::unique_ptr<Task> task = make_task(config, options.make_task);
  Trainer trainer(state, *task);
  if (config.moe.enabled() && config.moe.expert_bias) trainer.add_hook(std::make_shared<ExpertBiasUpdate>());
  for (const auto& hook : options.hooks) trainer.add_hook(hook);
  const auto prepared = Clock::now();
  // Resume (or start from a converted model) before anything runs; save where asked.
  Checkpointer checkpointer(state);
  if (!config.checkpoint.load.empty()) checkpointer.load(config.checkpoint.load);
  if (options.device.is_cuda()) torch::cuda::synchronize();
  log_startup(state, std::chrono::duration<double>(Clock::now() - start).count(),
              std::chrono::duration<double>(prepared - built).count(),
              std::chrono::duration<double>(Clock::now() - prepared).count());
  std::optional<StopSignals> stop_signals;
  if (!config.checkpoint.save.empty()) {
    stop_signals.emplace();
    trainer.set_checkpointer(&checkpointer);
  }
  TrainResult result;
  result.dense_state_bytes = state.optimizer->state_bytes(false);
  result.expert_state_bytes = state.optimizer->state_bytes(true);
  const int64_t recomputed_before = recompute_count();
  result.steps = trainer.run(options.keep_step_records);
  result.recomputed_regions = recompute_count() - recomputed_before;
  result.stopped = trainer.stopped();
  result.evaluations = trainer.evaluations();
  Model& model = *state.model;
  if (options.keep_final_params) {
    for (const auto& item : model.named_parameters()) {
      result.final_params.push_back({item.key(), item.value().detach().to(torch::kFloat).cpu().clone(),
                                     model.registry().info(item.value())});
    }
  }
  const LoggingConfig& logging = config.logging;
  const auto* lm = dynamic_cast<const LmTask*>(task.get());
  if (lm != nullptr && !logging.sample_prompt.empty() && logging.sample_tokens > 0) {
    result.sample = sample_text(model, groups, logging, lm->tokenizer(), options.device);
  }
  return result;
}

std::vector<EvalRecord> evaluate_checkpoint(const Config& config, ProcessGroups& groups, torch::Device device,
                                            const TaskFactory& factory) {
  TrainState state(config, groups, device);
  const std::unique_ptr<Task> task = make_task(config, factory);
  Trainer trainer(state, *task);
  Checkpointer checkpointer(state);
  checkpointer.load(config.checkpoint.load);
  std::vector<EvalRecord> records{trainer.evaluate(Split::kValid)};
  if (task->num_samples(Split::kTest) > 0) records.push_back(trainer.evaluate(Split::kTest));
  return records;
}

}  // namespace foldtron
