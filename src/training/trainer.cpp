// The training loop (see trainer.h).
#include "training/trainer.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/torch_compat.h"
#include "data/corpus.h"
#include "layers/context_parallel.h"
#include "layers/embedding.h"
#include "models/decoder_lm.h"
#include "optim/adamw.h"
#include "optim/param_buffer.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"
#include "training/flops.h"
#include "training/pipeline.h"

namespace foldtron {
namespace {

double resident_memory_gb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB
}

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(seconds);
  return total >= 3600 ? fmt::format("{}h{:02}m", total / 3600, (total % 3600) / 60)
                       : fmt::format("{}m{:02}s", total / 60, total % 60);
}

// Greedy continuation of `prompt` (bytes): every rank runs the same forward passes, the
// vocabulary shards of the last position are gathered over tp and the argmax appended.
std::string generate(DecoderLM& model, const Config& config, ProcessGroups& groups, torch::Device device,
                     const std::string& prompt, int64_t count) {
  torch::NoGradGuard no_grad;
  model.eval();
  std::vector<int64_t> ids;
  for (unsigned char c : prompt) ids.push_back(c);
  std::string out;
  const int64_t tp = groups.tp().size();
  for (int64_t i = 0; i < count; ++i) {
    int64_t window = std::min<int64_t>(static_cast<int64_t>(ids.size()), config.train.seq_length);
    if (config.parallel.sequence_parallel) window -= window % tp;  // SP splits the sequence over tp
    if (window < 1) break;
    const torch::Tensor input =
        torch::tensor(std::vector<int64_t>(ids.end() - window, ids.end()), torch::kLong).reshape({window, 1}).to(device);
    const torch::Tensor last = model.logits(input)[window - 1][0].reshape({1, -1});  // [1, V/tp]
    const torch::Tensor full = groups.tp().all_gather(last.contiguous()).reshape({-1});  // [V]
    const int64_t next = full.argmax().item<int64_t>();
    ids.push_back(next);
    out.push_back(static_cast<char>(next));
  }
  model.train();
  return out;
}

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

}  // namespace

std::string metrics_json(const StepRecord& r) {
  nlohmann::json j{{"step", r.step},
                   {"loss", r.loss},
                   {"lm_loss", r.lm_loss},
                   {"aux_loss", r.aux_loss},
                   {"z_loss", r.z_loss},
                   {"grad_norm", r.grad_norm},
                   {"lr", r.lr},
                   {"tokens", r.tokens},
                   {"step_time_s", r.step_time_s},
                   {"tokens_per_s", r.tokens_per_s},
                   {"tflops_per_gpu", r.tflops_per_gpu},
                   {"mfu", r.mfu},
                   {"mem_gb", r.mem_gb},
                   {"fwd_bwd_s", r.fwd_bwd_s},
                   {"grad_reduce_s", r.grad_reduce_s},
                   {"optimizer_s", r.optimizer_s},
                   {"skipped", r.skipped}};
  return j.dump();
}

TrainResult train(const Config& config, ProcessGroups& groups, const TrainOptions& options) {
  if (config.data.tokenizer != Tokenizer::kByte) {
    throw ConfigError("data.tokenizer", "training reads byte-level corpora only so far",
                      "set data.tokenizer: byte (sentencepiece corpora arrive with the data issue)");
  }
  if (config.logging.profile_step > 0 && groups.world_rank() == 0 && !trace_supported()) {
    throw ConfigError("logging.profile_step", "this LibTorch was built without Kineto, so no trace can be written",
                      "profile with a torch build that has it (the CUDA wheel: scripts/gpu_build.sh), or set "
                      "logging.profile_step: 0");
  }
  const TrainConfig& t = config.train;
  const int64_t dp = groups.dp().size();
  const int64_t per_rank = t.global_batch_size / dp;  // validated: divisible by micro * dp
  const int64_t micro_batches = per_rank / t.micro_batch_size;
  const torch::ScalarType dtype = config.model.params_dtype == DType::kBfloat16 ? torch::kBFloat16 : torch::kFloat;

  RngTracker rng(t.seed, groups.coords(), options.device);
  ParamRegistry registry;
  const LayerContext ctx{&groups.tp(), config.parallel.sequence_parallel && groups.tp().size() > 1, t.seed,
                         options.device, dtype, &rng, &registry, &groups, config.parallel.cp_comm_type};
  // Context parallelism: this rank's chunks of every sequence (positions in the sequence).
  const int64_t cp = groups.cp().size();
  const torch::Tensor positions = cp_positions(t.seq_length, cp, groups.cp().rank(), options.device);
  // Pipeline parallelism: this rank's chunks of the model and its part of the schedule.
  const int64_t pp = groups.pp().size(), vpp = config.parallel.vpp;
  const ModelPart part = ModelPart::of(config.parallel, config.model.num_layers, groups.pp().rank());
  const std::vector<PipelineTick> schedule =
      plan_pipeline(pp, vpp, micro_batches, false)[static_cast<size_t>(groups.pp().rank())];
  DecoderLM model(ctx, config.model, config.moe, part);
  model.train();
  const std::vector<torch::Tensor> params = model.parameters();
  BufferOptions buffer_options;
  buffer_options.bucket_bytes = static_cast<int64_t>(config.parallel.grad_bucket_mb * (1 << 20));
  buffer_options.shard = config.parallel.distributed_optimizer;
  buffer_options.overlap = config.parallel.overlap_grad_reduce;
  buffer_options.fuse_wgrad = config.parallel.gradient_accumulation_fusion;
  ParamBuffers buffers(params, registry, groups, buffer_options);
  AdamW optimizer(buffers, t);
  const TokenDataset data(config.data, t.seq_length, config.model.vocab_size, t.seed);

  int64_t local_params = 0;
  for (const auto& p : params) local_params += p.numel();
  log::info("train", "data: {}", data.describe());
  log::info("train", "model: {} layers, hidden {}, {} parameters on rank 0; world {} = tp {} x cp {} x dp {} x pp {}{}",
            config.model.num_layers, config.model.hidden_size, local_params, groups.world().size(),
            groups.tp().size(), cp, dp, pp,
            config.moe.enabled() ? fmt::format("; experts: {} MoE layers of {} experts top-{}, etp {} x ep {} x edp {}",
                                               num_moe_layers(config), config.moe.num_experts, config.moe.topk,
                                               groups.etp().size(), groups.ep().size(), groups.edp().size())
                                 : std::string());
  log::info("train", "optimizer: AdamW, {:.3f} GiB of state on this rank (fp32 main weights, {} moments){}; {:.3f} GiB "
                     "of gradient buffers in {} buckets, reduced {}",
            static_cast<double>(optimizer.state_bytes()) / (1 << 30), enum_name(t.adam_moments_dtype),
            buffers.sharded() ? " (distributed: sharded over dp_cp / edp)" : "",
            static_cast<double>(buffers.grad_bytes()) / (1 << 30), buffers.num_buckets(),
            buffer_options.overlap ? "during backward" : "after backward");
  log::info("train", "global batch {} = micro-batch {} x {} micro-batches x dp {}; {} steps", t.global_batch_size,
            t.micro_batch_size, micro_batches, dp, t.train_iters);
  if (pp > 1) {
    std::string chunks;
    for (int64_t v = 0; v < part.num_chunks(); ++v) {
      const int64_t first_layer = part.begin(v), last_layer = part.end(v) - 1;
      chunks += (v ? ", " : "") + (first_layer == last_layer ? fmt::format("layer {}", first_layer)
                                                             : fmt::format("layers {}-{}", first_layer, last_layer));
    }
    log::info("train", "pipeline: pp {} x vpp {}, {} schedule in {} ticks; rank 0 holds {}", pp, vpp,
              vpp > 1 ? "interleaved 1F1B" : "1F1B", schedule.size(), chunks);
  }

  std::ofstream metrics;
  if (groups.world_rank() == 0 && !config.logging.metrics_file.empty()) {
    metrics.open(config.logging.metrics_file, std::ios::trunc);
    if (!metrics) {
      throw IoError(fmt::format("cannot write the metrics file '{}'", config.logging.metrics_file),
                    "check that its folder exists and is writable");
    }
  }

  const double step_flops = flops_per_step(config, t.global_batch_size, t.seq_length);
  const double global_tokens = static_cast<double>(t.global_batch_size * t.seq_length);
  TrainResult result;
  result.dense_state_bytes = optimizer.state_bytes(false);
  result.expert_state_bytes = optimizer.state_bytes(true);
  int64_t bad_in_a_row = 0;
  double elapsed = 0;
  for (int64_t step = 0; step < t.train_iters; ++step) {
    const bool traced = groups.world_rank() == 0 && step + 1 == config.logging.profile_step;
    if (traced) {
      if (options.device.is_cuda()) torch::cuda::synchronize();
      torch_compat::start_trace(options.device.is_cuda());
    }
    const auto start = std::chrono::steady_clock::now();
    const double lr = learning_rate(t, step);
    buffers.zero_grads();
    std::vector<torch::Tensor> lm_terms, aux_terms, z_terms;  // this rank's shares, [1] each
    const int64_t first = step * t.global_batch_size + groups.coords().dp * per_rank;
    // Router losses are per micro-batch (each rank holds a share): averaged over all of them.
    const double aux_scale = 1.0 / static_cast<double>(micro_batches * dp);
    model.set_router_loss_scale(aux_scale);
    PipelineStage stage;
    stage.forward = [&](const PipelineOp& op, const torch::Tensor& input) {
      // [s, m] ids and targets of the micro-batch; [s/cp, m]: this rank's chunks.
      const torch::Tensor tokens =
          data.batch(first + op.micro * t.micro_batch_size, t.micro_batch_size).t().contiguous().to(options.device);
      const auto local = [&](const torch::Tensor& x) { return cp > 1 ? x.index_select(0, positions) : x; };
      const torch::Tensor out =
          model.forward_chunk(op.chunk, part.has_embedding(op.chunk) ? local(tokens.narrow(0, 0, t.seq_length)) : input,
                              positions);
      // The router losses stay on the device until the step ends (no host read per micro-batch).
      // Their gradient enters backward through the MoE layers' outputs (set_router_loss_scale).
      const RouterLosses router = model.router_losses(op.chunk);
      if (router.load_balancing.defined()) aux_terms.push_back(router.load_balancing.detach().reshape({1}) * aux_scale);
      if (router.z_loss.defined()) z_terms.push_back(router.z_loss.detach().reshape({1}) * aux_scale);
      if (!part.has_head(op.chunk)) return out;
      const torch::Tensor targets = local(tokens.narrow(0, 1, t.seq_length));
      torch::Tensor loss = vocab_parallel_cross_entropy(out, targets, groups.tp()).sum() / global_tokens;
      lm_terms.push_back(loss.detach().to(torch::kDouble).reshape({1}));
      return loss;
    };
    // Each chunk's last backward (micro-batch M-1 in every schedule) reduces buckets as they fill
    // (a bucket that spans two chunks starts after the later of their last backwards).
    stage.before_backward = [&](const PipelineOp& op) { buffers.set_sync(op.micro + 1 == micro_batches); };
    run_pipeline(schedule, groups.pp(), model.stream_shape(t.seq_length, t.micro_batch_size), model.stream_options(),
                 stage, false);
    const auto phase_end = [&] {
      if (options.device.is_cuda()) torch::cuda::synchronize();
      return std::chrono::steady_clock::now();
    };
    const auto computed = phase_end();
    buffers.finish_grad_sync();
    const auto total_of = [](const std::vector<torch::Tensor>& terms) {
      return terms.empty() ? 0.0 : torch::cat(terms).sum().item<double>();
    };
    // The global mean over all tokens: the last stage's sums over dp x cp, then to every stage.
    torch::Tensor loss_sum = torch::full({1}, total_of(lm_terms), torch::kDouble);
    groups.dp_cp().all_reduce(loss_sum);
    groups.pp().all_reduce(loss_sum);
    // [load balancing, z]: shares summed over tp x cp, micro-batch means over dp, layers over pp.
    torch::Tensor router_sums = torch::tensor({total_of(aux_terms), total_of(z_terms)}, torch::kDouble);
    groups.world().all_reduce(router_sums);
    const double grad_norm = global_grad_norm(buffers, registry, groups);
    const auto reduced = phase_end();

    StepRecord record;
    record.step = step + 1;
    record.lm_loss = loss_sum.item<double>();
    record.aux_loss = router_sums[0].item<double>();
    record.z_loss = router_sums[1].item<double>();
    record.loss = record.lm_loss + record.aux_loss + record.z_loss;
    record.grad_norm = grad_norm;
    record.lr = lr;
    record.tokens = t.global_batch_size * t.seq_length;
    if (!std::isfinite(record.loss) || !std::isfinite(grad_norm)) {
      record.skipped = true;
      ++bad_in_a_row;
      log::warning("train", "step {}: loss {} / grad norm {} is not finite; skipping the update ({} in a row)",
                   step + 1, record.loss, grad_norm, bad_in_a_row);
      if (bad_in_a_row >= t.max_bad_steps) {
        throw TrainingError(fmt::format("{} steps in a row had a non-finite loss or gradient", bad_in_a_row),
                            "lower train.lr, raise lr_warmup_iters, or check the data; train.max_bad_steps sets "
                            "how many are tolerated");
      }
    } else {
      bad_in_a_row = 0;
      const double scale = t.clip_grad > 0 ? std::min(1.0, t.clip_grad / (grad_norm + 1e-6)) : 1.0;
      optimizer.step(lr, scale);
    }
    for (const auto& layer : model.moe_layers()) layer->gate->update_expert_bias();
    const auto end = phase_end();
    if (traced) {
      torch_compat::stop_trace(config.logging.profile_file);
      log::info("train", "step {} traced into {}", step + 1, config.logging.profile_file);
    }
    record.step_time_s = std::chrono::duration<double>(end - start).count();
    record.fwd_bwd_s = std::chrono::duration<double>(computed - start).count();
    record.grad_reduce_s = std::chrono::duration<double>(reduced - computed).count();
    record.optimizer_s = std::chrono::duration<double>(end - reduced).count();
    elapsed += record.step_time_s;
    record.tokens_per_s = global_tokens / record.step_time_s;
    record.tflops_per_gpu = step_flops / record.step_time_s / static_cast<double>(groups.world().size()) / 1e12;
    record.mfu = record.tflops_per_gpu / config.logging.peak_tflops;
    record.mem_gb = options.device.is_cuda() ? torch_compat::cuda_peak_memory_gb(options.device.index())
                                             : resident_memory_gb();
    result.steps.push_back(record);

    if ((step + 1) % config.logging.log_interval == 0 || step + 1 == t.train_iters) {
      const double eta = elapsed / static_cast<double>(step + 1) * static_cast<double>(t.train_iters - step - 1);
      log::info("train",
                "step {}/{} | loss {:.4f}{} | lr {:.3e} | grad norm {:.3f} | {:.0f} tokens/s | {:.3f} TFLOP/s/gpu | "
                "MFU {:.2f}% | mem {:.2f} GB | {:.3f} s/step | ETA {}",
                step + 1, t.train_iters, record.loss,
                config.moe.enabled() ? fmt::format(" (lm {:.4f} + aux {:.4f}{})", record.lm_loss, record.aux_loss,
                                                   config.moe.z_loss_coeff > 0 ? fmt::format(" + z {:.4f}", record.z_loss) : "")
                                     : "", lr, grad_norm, record.tokens_per_s, record.tflops_per_gpu,
                100.0 * record.mfu, record.mem_gb, record.step_time_s, format_duration(eta));
      if (metrics.is_open()) metrics << metrics_json(record) << "\n" << std::flush;
    }
  }
  if (result.steps.size() > 1) {
    // Where the time went, without the first step (start-up).
    double total = 0, compute = 0, reduce = 0, update = 0;
    for (size_t i = 1; i < result.steps.size(); ++i) {
      total += result.steps[i].step_time_s;
      compute += result.steps[i].fwd_bwd_s;
      reduce += result.steps[i].grad_reduce_s;
      update += result.steps[i].optimizer_s;
    }
    const double n = static_cast<double>(result.steps.size() - 1);
    log::info("train", "mean step after the first: {:.4f} s = forward+backward {:.4f} s + gradient reduction and norm "
                       "{:.4f} s + optimizer {:.4f} s",
              total / n, compute / n, reduce / n, update / n);
  }
  if (options.keep_final_params) {
    for (const auto& item : model.named_parameters()) {
      result.final_params.push_back({item.key(), item.value().detach().to(torch::kFloat).cpu().clone(),
                                     registry.info(item.value())});
    }
  }
  if (!options.prompt.empty() && options.generate_tokens > 0 && (cp > 1 || pp > 1)) {
    log::info("train", "no greedy sample: generation does not run with context or pipeline parallelism yet");
  } else if (!options.prompt.empty() && options.generate_tokens > 0) {
    result.sample = generate(model, config, groups, options.device, options.prompt, options.generate_tokens);
  }
  return result;
}

}  // namespace foldtron
