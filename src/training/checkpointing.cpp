// Saving and loading the train state (see checkpointing.h).
#include "training/checkpointing.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>

#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/distributed.h"
#include "checkpoint/model_state.h"
#include "config/compare.h"
#include "config/config_load.h"
#include "core/errors.h"
#include "core/fault.h"
#include "core/log.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"
#include "optim/adamw.h"

namespace foldtron {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::atomic<bool> stop_flag{false};

void on_stop_signal(int signal) {
  stop_flag.store(true);
  report_signal(signal);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Refuses a checkpoint of another network (keys that shape the tensors differ); warns about keys
// that change only what the same tensors compute.
void check_same_model(const Config& saved, const Config& current, const std::string& path) {
  std::string shapes, function;
  for (const ModelDifference& d : model_differences(saved, current)) {
    (d.shapes ? shapes : function) += fmt::format("\n  - {} {} (saved) vs {} (now)", d.key, d.a, d.b);
  }
  if (!shapes.empty()) {
    throw CheckpointError(fmt::format("checkpoint '{}' holds another model:{}", path, shapes),
                          "train with the checkpoint's model settings (its metadata.json holds its config)");
  }
  if (!function.empty()) {
    log::warning("checkpoint", "'{}' was saved with other model settings; training goes on with the new ones:{}", path,
                 function);
  }
}

// Each parameter's name, by its tensor.
std::map<const c10::TensorImpl*, std::string> parameter_names(Model& model) {
  std::map<const c10::TensorImpl*, std::string> names;
  for (const auto& item : model.named_parameters()) names[item.value().unsafeGetTensorImpl()] = item.key();
  return names;
}

}  // namespace

StopSignals::StopSignals() {
  stop_flag.store(false);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, &previous_term_);
  ::sigaction(SIGINT, &action, &previous_int_);
}

StopSignals::~StopSignals() {
  ::sigaction(SIGTERM, &previous_term_, nullptr);
  ::sigaction(SIGINT, &previous_int_, nullptr);
}

bool stop_requested() { return stop_flag.load(); }

Checkpointer::Checkpointer(TrainState& state) : state_(state) {}

Checkpointer::~Checkpointer() {
  // An asynchronous save still writing: let it finish its file (the save stays incomplete, and
  // the last complete one loadable, if the job ends here).
  if (pending_ && pending_->written.valid()) pending_->written.wait();
}

std::vector<CheckpointItem> Checkpointer::items() const {
  Model& model = *state_.model;
  const ParamRegistry& registry = model.registry();
  std::vector<CheckpointItem> items = model_items(model, state_.groups);
  const auto names = parameter_names(model);
  const bool sharded = state_.buffers->sharded();
  for (const AdamW::StateSegment& s : state_.optimizer->state_segments()) {
    const ParamInfo info = registry.info(s.param);
    if (!writes_pieces(info, state_.groups, sharded)) continue;
    const std::string& name = names.at(s.param.unsafeGetTensorImpl());
    const int64_t end = s.begin + s.main.numel();
    add_items(items, "optim.main/" + name, s.param, info, s.begin, end, s.main);
    add_items(items, "optim.exp_avg/" + name, s.param, info, s.begin, end, s.exp_avg);
    add_items(items, "optim.exp_avg_sq/" + name, s.param, info, s.begin, end, s.exp_avg_sq);
  }
  return items;
}

json Checkpointer::state_json() const {
  json state = carried_.is_object() ? carried_ : json::object();
  const TrainConfig& t = state_.config.train;
  state["step"] = state_.step;
  state["consumed_samples"] = state_.consumed_samples;
  state["optimizer_steps"] = state_.optimizer->steps();
  state["bad_steps_in_a_row"] = state_.bad_steps_in_a_row;
  state["has_optimizer"] = true;
  // The schedule is a function of the step (optim/adamw.h's learning_rate); its settings and the next
  // step's rate, for the reader.
  state["lr_schedule"] = {{"next_lr", learning_rate(t, state_.step)}, {"lr", t.lr}, {"min_lr", t.min_lr},
                          {"warmup_iters", t.lr_warmup_iters}, {"decay", enum_name(t.lr_decay_style)},
                          {"decay_iters", t.lr_decay_iters}};
  state["config"] = config_to_yaml(state_.config);
  state["layout"] = layout_json(state_.config.parallel, state_.groups.world().size());
  return state;
}

void Checkpointer::save() {
  const CheckpointConfig& c = state_.config.checkpoint;
  FT_CHECK(!c.save.empty(), "save() without checkpoint.save");
  finish(true);  // an earlier asynchronous save completes first
  set_activity(fmt::format("saving the checkpoint of step {}", state_.step));
  Communicator& world = state_.groups.world();
  Pending pending;
  pending.root = c.save;
  pending.name = checkpoint_name(state_.step);
  pending.state = state_json();
  pending.started = now_s();
  const std::string tmp = begin_checkpoint(world, pending.root, pending.name);
  std::vector<CheckpointItem> items = this->items();
  // Every RNG stream of this rank, in its own file (restored only into the same layout).
  std::vector<std::pair<std::string, torch::Tensor>> rng;
  const std::vector<torch::Tensor> streams = state_.model->rng().states();
  for (size_t i = 0; i < streams.size(); ++i) rng.emplace_back(fmt::format("rng.{}", i), streams[i].cpu());
  for (const CheckpointItem& item : items) pending.bytes += item.box.numel() * static_cast<int64_t>(c10::elementSize(item.dtype));
  const int64_t rank = world.rank();
  if (c.async) {
    // A host copy now (pinned from a GPU); the file is written while training goes on.
    torch::NoGradGuard no_grad;
    for (CheckpointItem& item : items) {
      torch::Tensor copy = torch::empty(item.data.sizes(),
                                        torch::TensorOptions().dtype(item.dtype).pinned_memory(item.data.is_cuda()));
      copy.copy_(item.data);
      item.data = copy;
    }
    if (rank == 0) {
      log::info("checkpoint", "step {}: {:.3f} GB copied to host memory in {:.2f} s; writing {} in the background",
                state_.step, static_cast<double>(pending.bytes) / 1e9, now_s() - pending.started, pending.name);
    }
    pending.written = std::async(std::launch::async, [tmp, rank, items = std::move(items), rng, threads = c.writer_threads]() {
      return write_rank_files(tmp, rank, items, rng, threads);
    });
    pending_ = std::move(pending);
    return;
  }
  std::promise<json> done;
  try {
    done.set_value(write_rank_files(tmp, rank, items, rng, c.writer_threads));
  } catch (...) {
    done.set_exception(std::current_exception());
  }
  pending.written = done.get_future();
  pending_ = std::move(pending);
  finish(true);
}

void Checkpointer::finish(bool wait) {
  if (!pending_) return;
  Pending& pending = *pending_;
  // 1: written, 0: still writing, -1: failed; every rank learns the least.
  double status = 0;
  if (wait || pending.written.wait_for(std::chrono::seconds(0)) == std::future_status::ready) status = 1;
  std::string error;
  json mine;
  if (status == 1) {
    try {
      mine = pending.written.get();
    } catch (const std::exception& e) {
      status = -1;
      error = e.what();
    }
  }
  torch::Tensor flag = torch::full({1}, -status, torch::kDouble);  // the least status: max of its negation
  state_.groups.world().all_reduce(flag, ReduceOp::kMax);
  const double all = -flag.item<double>();
  const int64_t pending_step = pending.state.value("step", int64_t{0});
  if (all == 0) {
    if (status == 1) pending.written = std::async(std::launch::deferred, [mine] { return mine; });  // again next time
    return;
  }
  if (all < 0) {
    // Writers still busy on other ranks (or threads) stop first: the folder goes after the gather.
    if (pending.written.valid()) pending.written.wait();
    // Every rank names the first rank that failed and why (its message stays on that rank otherwise).
    const std::vector<std::string> errors = all_gather_strings(state_.groups.world(), error);
    const auto failed = std::find_if(errors.begin(), errors.end(), [](const std::string& e) { return !e.empty(); });
    abandon_checkpoint(state_.groups.world(), pending.root, pending.name);
    pending_.reset();
    const std::string who = failed == errors.end() ? std::string("a rank") : fmt::format("rank {}", failed - errors.begin());
    const std::string reason = failed == errors.end() ? std::string("(no message)") : *failed;
    throw CheckpointError(fmt::format("{} could not write its part of the checkpoint of step {}: {}", who, pending_step,
                                      reason),
                          "check that checkpoint.save has free space and is writable; the last complete checkpoint "
                          "is untouched");
  }
  try {
    commit_checkpoint(state_.groups.world(), pending.root, pending.name, mine, pending.state,
                      state_.config.checkpoint.keep_last);
  } catch (const CheckpointError&) {
    abandon_checkpoint(state_.groups.world(), pending.root, pending.name);
    pending_.reset();
    throw;
  }
  if (state_.groups.world_rank() == 0) {
    const double seconds = now_s() - pending.started;
    const double gb = static_cast<double>(pending.bytes) / 1e9;
    log::info("checkpoint", "saved {} (step {}): {:.3f} GB from rank 0 in {:.2f} s, {:.2f} GB/s per rank{}",
              (fs::path(pending.root) / pending.name).string(), pending.state.value("step", int64_t{0}), gb, seconds,
              gb / std::max(seconds, 1e-9), state_.config.checkpoint.async ? " (asynchronous)" : "");
  }
  pending_.reset();
}

void Checkpointer::read_optimizer(const CheckpointReader& reader) {
  Model& model = *state_.model;
  const auto names = parameter_names(model);
  const ParamRegistry& registry = model.registry();
  for (const AdamW::StateSegment& s : state_.optimizer->state_segments()) {
    const std::string& name = names.at(s.param.unsafeGetTensorImpl());
    const ParamInfo info = registry.info(s.param);
    const int64_t end = s.begin + s.main.numel();
    read_items(reader, "optim.main/" + name, s.param, info, s.begin, end, s.main);
    read_items(reader, "optim.exp_avg/" + name, s.param, info, s.begin, end, s.exp_avg);
    read_items(reader, "optim.exp_avg_sq/" + name, s.param, info, s.begin, end, s.exp_avg_sq);
  }
  state_.optimizer->set_steps(reader.state().value("optimizer_steps", int64_t{0}));
}

void Checkpointer::restore_rng(const CheckpointReader& reader, bool same_layout) {
  // In another layout the streams restart from the seed and the step (reproducible, not the same
  // masks, which depend on the layout anyway).
  RngTracker& rng = state_.model->rng();
  std::vector<torch::Tensor> streams;
  if (same_layout) {
    for (size_t i = 0; i < rng.states().size(); ++i) {
      const torch::Tensor s = reader.rank_tensor(state_.groups.world_rank(), fmt::format("rng.{}", i));
      if (!s.defined()) break;
      streams.push_back(s);
    }
  }
  if (streams.size() != rng.states().size()) {
    streams = RngTracker(state_.config.train.seed + state_.step, state_.groups.coords(), state_.device).states();
  }
  rng.set_states(streams);
}

namespace {

Config config_of(const json& state, const std::string& path) {
  try {
    return load_config(ConfigSources{}, state.value("config", std::string()));
  } catch (const Error& e) {
    throw CheckpointError(fmt::format("the config saved in '{}' does not load: {}", path, e.what()),
                          "it was written by another foldtron version; load it with that version");
  }
}

}  // namespace

Config checkpoint_config(const std::string& dir) {
  const std::string path = resolve_checkpoint(dir);
  if (path.empty()) {
    throw CheckpointError(fmt::format("'{}' holds no checkpoint (no metadata.json, no 'latest')", dir),
                          "pass a folder foldtron train saved into (checkpoint.save), or one of its iter_* folders");
  }
  return config_of(CheckpointReader(path, /*verify=*/false).state(), path);
}

bool Checkpointer::load(const std::string& dir) {
  const double started = now_s();
  const std::string path = resolve_checkpoint(dir);
  if (path.empty()) {
    if (state_.config.checkpoint.load_optional) {
      log::info("checkpoint", "no checkpoint in '{}' yet: starting fresh (checkpoint.load_optional)", dir);
      return false;
    }
    if (fs::exists(fs::path(dir) / "config.json")) {
      throw CheckpointError(fmt::format("'{}' holds no checkpoint (no metadata.json, no 'latest'); it looks like a "
                                        "Hugging Face model directory",
                                        dir),
                            fmt::format("convert it first: foldtron convert --from hf --to foldtron --input {} --output "
                                        "DIR, then load DIR",
                                        dir));
    }
    throw CheckpointError(fmt::format("'{}' holds no checkpoint (no metadata.json, no 'latest')", dir),
                          "point checkpoint.load at a folder foldtron saved into, or set checkpoint.load_optional: "
                          "true to start fresh when it is empty");
  }
  const CheckpointReader reader(path, /*verify=*/false);  // verify_together below
  const json& saved = reader.state();
  const Config saved_config = config_of(saved, path);
  check_same_model(saved_config, state_.config, path);
  const json saved_layout = saved.value("layout", json::object());
  const json layout = layout_json(state_.config.parallel, state_.groups.world().size());
  Model& model = *state_.model;
  // Every file is checked before anything is read: a damaged checkpoint leaves nothing half-loaded.
  verify_together(reader, state_.groups.world(), state_.config.checkpoint.writer_threads);
  const double verified = now_s();
  read_model(model, reader);
  const bool has_optimizer = saved.value("has_optimizer", false);
  if (has_optimizer) {
    read_optimizer(reader);
  } else {
    state_.optimizer->reset_from_params();  // a converted model: AdamW starts here
  }
  state_.step = saved.value("step", int64_t{0});
  state_.consumed_samples = saved.value("consumed_samples", int64_t{0});
  state_.bad_steps_in_a_row = saved.value("bad_steps_in_a_row", int64_t{0});
  const bool same_layout = saved_layout == layout;
  restore_rng(reader, same_layout);
  carried_ = json::object();
  if (saved.contains("hf")) carried_["hf"] = saved.at("hf");
  if (state_.groups.world_rank() == 0) {
    const double seconds = now_s() - started;
    log::info("checkpoint",
              "loaded {} (step {}, {} consumed samples{}) saved under {} into {}{}: {:.3f} GB read by rank 0 in {:.2f} s "
              "({:.2f} s verifying checksums), {:.2f} GB/s per rank",
              path, state_.step, state_.consumed_samples,
              has_optimizer ? "" : "; no optimizer state: AdamW starts fresh", layout_text(saved_layout),
              layout_text(layout), same_layout ? "" : " (resharded; RNG streams restarted from the seed and the step)",
              static_cast<double>(reader.bytes_read()) / 1e9, seconds, verified - started,
              static_cast<double>(reader.bytes_read()) / 1e9 / std::max(seconds, 1e-9));
  }
  return true;
}

}  // namespace foldtron
