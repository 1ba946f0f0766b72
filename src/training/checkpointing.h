// Saving and loading the whole train state (DESIGN.md's checkpoint contract; the format is
// checkpoint/distributed.h's). What a checkpoint holds, as global tensors:
//   model/<name>            every parameter (and weight buffer such as final_logits_bias), as the
//                           model holds it (its dtype)
//   optim.main/<name>       the fp32 main weights
//   optim.exp_avg/<name>, optim.exp_avg_sq/<name>   AdamW's moments (fp32 or bf16)
//   buffer/<name>           the routers' expert biases
// and in its state: the step, the consumed samples (the data position), the optimizer's step
// count, the bad-step counter, the learning-rate schedule, the resolved config, the layout it was
// saved from, and every rank's RNG streams (in that rank's file). Each rank writes only what it
// holds, once per replica group (tensor-parallel and data-parallel replicas write nothing twice;
// with the distributed optimizer every data-parallel rank writes its shard of the optimizer
// state).
//
// Save: into DIR/iter_NNNNNNN with checkpoint/model_state.h's protocol (a crash at any moment
// leaves the last complete checkpoint loadable). With checkpoint.async the tensors are copied to
// host memory (pinned) and written by a thread while training goes on; the first step that finds
// every rank done completes the save.
//
// Load: every file is verified (size, checksum) before anything is read. DIR/latest (or DIR
// itself when it is one checkpoint) loads into any layout: every parameter and
// optimizer state is read by the boxes this rank now holds. In the layout it was saved from, the
// RNG streams are restored too, so training resumes bit-exactly; in another layout they restart
// from the seed and the step.
#pragma once

#include <csignal>

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "training/train_state.h"

namespace foldtron {

class CheckpointReader;

struct CheckpointItem;

class Checkpointer {
 public:
  explicit Checkpointer(TrainState& state);
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Saves the state at its current step into checkpoint.save. Collective.
  void save();
  // Completes an asynchronous save once every rank has written its file (with `wait`, waits for
  // that); nothing to do without one. Collective.
  void finish(bool wait);
  bool saving() const { return pending_.has_value(); }

  // Loads checkpoint.load (a save folder with `latest`, or one checkpoint folder) into the state.
  // Returns false when there is none and checkpoint.load_optional; CheckpointError otherwise.
  // Collective.
  bool load(const std::string& dir);

 private:
  struct Pending {
    std::string root, name;     // DIR and iter_NNNNNNN
    nlohmann::json state;       // for the metadata
    std::future<nlohmann::json> written;  // this rank's file description
    double started = 0;         // seconds since the epoch
    int64_t bytes = 0;
  };
  std::vector<CheckpointItem> items() const;
  nlohmann::json state_json() const;
  void read_optimizer(const CheckpointReader& reader);
  // This rank's RNG streams: its own where the layout is the one saved, else restarted.
  void restore_rng(const CheckpointReader& reader, bool same_layout);

  TrainState& state_;
  std::optional<Pending> pending_;
  nlohmann::json carried_;  // state carried from the loaded checkpoint (its Hugging Face origin)
};

// The config a checkpoint was saved with (`dir`: a save folder with `latest`, or one checkpoint
// folder). CheckpointError when there is no checkpoint or its config does not load.
Config checkpoint_config(const std::string& dir);

// While one lives, SIGTERM and SIGINT (a scheduler's preemption, Ctrl-C) set a flag instead of
// ending the process, so the trainer can save and stop at the end of the step. It starts with the
// flag down and puts the previous handlers back when it goes.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction previous_term_ {}, previous_int_ {};
};
bool stop_requested();

}  // namespace foldtron
