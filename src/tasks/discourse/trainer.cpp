// The discourse classifier's training loop (see trainer.h).
#include "tasks/discourse/trainer.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/log.h"
#include "parallel/process_groups.h"
#include "tasks/discourse/classifier.h"

namespace foldtron {
namespace {

using Clock = std::chrono::steady_clock;

// The instances of epoch `epoch` in their order (the same on every rank).
std::vector<int64_t> epoch_order(int64_t count, int64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(static_cast<uint64_t>(seed) * 7919ULL + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

// The network's state kept for the best epoch: parameters and the memory shard.
struct Snapshot {
  std::vector<torch::Tensor> params;
  torch::Tensor keys, labels, active;
};

Snapshot take_snapshot(DiscourseClassifier& c) {
  Snapshot s;
  for (const torch::Tensor& p : c.net()->parameters()) s.params.push_back(p.detach().clone());
  if (c.memory() && c.memory()->filled()) {
    s.keys = c.memory()->keys().clone();
    s.labels = c.memory()->labels().clone();
    s.active = c.memory()->active().clone();
  }
  return s;
}

void restore_snapshot(DiscourseClassifier& c, const Snapshot& s) {
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> params = c.net()->parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(s.params[i]);
  if (s.keys.defined()) c.memory()->store(s.keys, s.labels, s.active);  // collective over dp, on every rank alike
}

// Gradients summed over dp (one flat all-reduce), then clipped by their global norm (on the
// device: no host sync).
void reduce_gradients(DiscourseClassifier& c, double clip) {
  std::vector<torch::Tensor> grads;
  const std::vector<torch::Tensor> params = c.net()->parameters();
  for (const torch::Tensor& p : params) {
    grads.push_back(p.grad().defined() ? p.grad().flatten() : torch::zeros({p.numel()}, p.options()));
  }
  torch::Tensor flat = torch::cat(grads);
  c.groups().dp().all_reduce(flat);  // dp: the gradient of the whole batch's mean loss
  if (clip > 0) flat.mul_((clip / (flat.norm() + 1e-6)).clamp_max(1.0));
  int64_t offset = 0;
  for (const torch::Tensor& p : params) {
    p.mutable_grad() = flat.narrow(0, offset, p.numel()).view_as(p).clone();  // (zero_grad detaches: no views)
    offset += p.numel();
  }
}

// One optimizer step on the global batch `indices` (this rank takes its dp share). Returns the
// batch's [relation, connective] losses over every dp rank, on the device.
torch::Tensor train_step(DiscourseClassifier& c, torch::optim::Optimizer& optimizer, const EncodedSet& train,
                         const std::vector<int64_t>& indices) {
  const DiscourseConfig& d = c.config().discourse;
  const int64_t dp = c.groups().dp().size(), rank = c.groups().dp().rank(), total = static_cast<int64_t>(indices.size());
  const auto [begin, end] = even_range(total, dp, rank);
  // A training instance's memory slot is its index: it does not read itself.
  const DiscourseBatch batch = collate(train, {indices.begin() + begin, indices.begin() + end}, true);
  optimizer.zero_grad();
  const DiscourseClassifier::Output out = c.forward(batch);
  const double scale = 1.0 / static_cast<double>(total);
  torch::Tensor relation = torch::nll_loss(out.log_probs, batch.labels, {}, at::Reduction::Sum) * scale;
  torch::Tensor connective = torch::zeros({}, relation.options());
  const torch::Tensor conn_logits = c.net()->connective_logits(out.z);
  if (conn_logits.defined() && batch.size() > 0) {
    connective = torch::nn::functional::cross_entropy(
                     conn_logits, batch.connectives,
                     torch::nn::functional::CrossEntropyFuncOptions().ignore_index(0).reduction(torch::kSum)) *
                 scale;
  }
  torch::Tensor loss = relation + d.connective_weight * connective;
  // A rank whose share is empty still runs the memory read's backward (its collectives).
  if (out.read) loss = loss + 0 * (out.read->key.sum() + out.read->value.sum());
  loss.backward();
  reduce_gradients(c, d.clip_grad);
  optimizer.step();
  torch::Tensor sums = torch::stack({relation.detach(), connective.detach()}).to(torch::kDouble);
  c.groups().dp().all_reduce(sums);  // dp: the whole batch's losses
  return sums;
}

// One pass over the training instances in the epoch's order: the epoch's mean losses (steps:
// the steps it took), and each step's loss appended to `step_losses`.
DiscourseEpoch train_epoch(DiscourseClassifier& classifier, torch::optim::Optimizer& optimizer, const EncodedSet& train,
                           int64_t epoch, bool rank0, std::vector<double>& step_losses) {
  const DiscourseConfig& d = classifier.config().discourse;
  const int64_t n = train.size(), steps_per_epoch = (n + d.batch_size - 1) / d.batch_size;
  const auto start = Clock::now();
  const std::vector<int64_t> order = epoch_order(n, d.seed, epoch);
  DiscourseEpoch record;
  record.epoch = epoch;
  record.steps = steps_per_epoch;
  auto last_log = start;
  std::vector<torch::Tensor> losses;  // [relation, connective] of each step, on the device
  for (int64_t s = 0; s < steps_per_epoch; ++s) {
    const auto first = order.begin() + s * d.batch_size;
    const std::vector<int64_t> indices(first, order.begin() + std::min(n, (s + 1) * d.batch_size));
    losses.push_back(train_step(classifier, optimizer, train, indices));
    const auto now = Clock::now();
    if (rank0 && now - last_log > std::chrono::seconds(30)) {  // progress within a long epoch
      const double seconds = std::chrono::duration<double>(now - start).count();
      log::info("discourse", "epoch {}/{}: step {}/{}, relation loss {:.4f}, {:.0f} instances/s", epoch, d.epochs,
                s + 1, steps_per_epoch, losses.back()[0].item<double>(),
                static_cast<double>((s + 1) * d.batch_size) / seconds);
      last_log = now;
    }
  }
  const torch::Tensor epoch_losses = torch::stack(losses).cpu();  // [steps, 2] (one sync an epoch)
  for (int64_t s = 0; s < steps_per_epoch; ++s) {
    const double relation = epoch_losses[s][0].item<double>(), connective = epoch_losses[s][1].item<double>();
    step_losses.push_back(relation + d.connective_weight * connective);
    record.loss += step_losses.back() / static_cast<double>(steps_per_epoch);
    record.relation_loss += relation / static_cast<double>(steps_per_epoch);
    record.connective_loss += connective / static_cast<double>(steps_per_epoch);
  }
  return record;
}

double selection_metric(const DiscourseScores& s, SenseLevel level) {
  return level == SenseLevel::kFourWay ? s.macro_f1 : s.accuracy;
}

void write_record(std::ofstream& file, const nlohmann::ordered_json& record) {
  if (!file.is_open()) return;
  file << record.dump() << "\n";
  file.flush();
}

}  // namespace

DiscourseTrainResult train_discourse(const Config& config, ProcessGroups& groups, const DiscourseTrainOptions& options) {
  validate_discourse_config(config);
  if (!config.checkpoint.save.empty()) check_save_folder(config.checkpoint.save);
  const DiscourseConfig& d = config.discourse;
  const bool rank0 = groups.world().rank() == 0;
  const std::vector<DiscourseInstance> train_text = read_discourse_split(d, "train", true);
  const std::vector<DiscourseInstance> dev_text = read_discourse_split(d, "dev", false);
  const std::vector<DiscourseInstance> test_text = read_discourse_split(d, "test", false);
  if (dev_text.empty()) {
    throw DataError(fmt::format("{}/dev.json has no {} instance of the types '{}'", d.data, d.level, d.types),
                    "the dev split chooses the epoch kept: give it instances");
  }
  DiscourseClassifier classifier(config, train_text, groups, options.device);
  const EncodedSet train = classifier.encode(train_text);
  const EncodedSet dev = classifier.encode(dev_text);
  const EncodedSet test = classifier.encode(test_text);
  const int64_t n = train.size();
  const int64_t steps_per_epoch = (n + d.batch_size - 1) / d.batch_size;
  if (rank0) {
    log::info("discourse", "{} {} model, grains '{}'{}: {} training instances ({} steps an epoch over dp {}), {} dev, "
              "{} test, {} classes, {} words, {} parameters",
              d.level, d.model, d.grains, d.memory ? " + memory" : "", n, steps_per_epoch, groups.dp().size(),
              dev.size(), test.size(), classifier.vocabularies().classes.size(),
              classifier.vocabularies().words.size(), [&] {
                int64_t count = 0;
                for (const torch::Tensor& p : classifier.net()->parameters()) count += p.numel();
                return count;
              }());
  }
  std::ofstream metrics;
  if (rank0 && !config.logging.metrics_file.empty()) {
    metrics.open(config.logging.metrics_file);
    if (!metrics) {
      throw IoError(fmt::format("cannot write logging.metrics_file '{}'", config.logging.metrics_file),
                    "check that its folder exists and can be written");
    }
  }
  torch::optim::AdamW optimizer(classifier.net()->parameters(),
                                torch::optim::AdamWOptions(d.lr).weight_decay(d.weight_decay));
  classifier.net()->train();
  DiscourseTrainResult result;
  Snapshot best;
  double best_metric = -1;
  for (int64_t epoch = 1; epoch <= d.epochs; ++epoch) {
    const auto start = Clock::now();
    DiscourseEpoch record = train_epoch(classifier, optimizer, train, epoch, rank0, result.step_losses);
    record.steps = epoch * steps_per_epoch;
    const double train_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (classifier.memory()) record.memory_correct = classifier.refresh_memory(train);
    record.dev = classifier.score(dev_text, classifier.predict(dev));
    record.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    record.instances_per_second = static_cast<double>(n) / std::max(train_seconds, 1e-9);
    if (selection_metric(record.dev, classifier.level()) > best_metric) {
      best_metric = selection_metric(record.dev, classifier.level());
      result.best_epoch = epoch;
      best = take_snapshot(classifier);
    }
    if (rank0) {
      log::info("discourse", "epoch {}/{}: loss {:.4f} (relation {:.4f}, connective {:.4f}){}; dev accuracy {:.2f}%, "
                "macro-F1 {:.2f}%; {:.0f} instances/s, {:.1f} s",
                epoch, d.epochs, record.loss, record.relation_loss, record.connective_loss,
                classifier.memory() ? fmt::format(", memory: {:.1f}% right", 100 * record.memory_correct) : "",
                100 * record.dev.accuracy, 100 * record.dev.macro_f1, record.instances_per_second, record.seconds);
    }
    write_record(metrics, {{"epoch", epoch}, {"step", record.steps}, {"loss", record.loss},
                           {"relation_loss", record.relation_loss}, {"connective_loss", record.connective_loss},
                           {"memory_correct", record.memory_correct}, {"dev_accuracy", record.dev.accuracy},
                           {"dev_macro_f1", record.dev.macro_f1}, {"instances_per_s", record.instances_per_second},
                           {"seconds", record.seconds}});
    result.epochs.push_back(std::move(record));
  }
  restore_snapshot(classifier, best);
  result.dev = result.epochs.at(static_cast<size_t>(result.best_epoch - 1)).dev;
  torch::Tensor test_probs;
  if (test.size() > 0) {
    test_probs = classifier.predict(test);
    result.test = classifier.score(test_text, test_probs);
  }
  for (const auto& [split, scores] : {std::pair<std::string, const DiscourseScores*>{"dev", &result.dev},
                                      {"test", &result.test}}) {
    nlohmann::ordered_json record = scores_json(*scores);
    record["split"] = split;
    record["epoch"] = result.best_epoch;
    write_record(metrics, record);
  }
  if (rank0) {
    log::info("discourse", "kept epoch {}: dev accuracy {:.2f}%, macro-F1 {:.2f}%; test accuracy {:.2f}%, macro-F1 "
              "{:.2f}% ({} instances)",
              result.best_epoch, 100 * result.dev.accuracy, 100 * result.dev.macro_f1, 100 * result.test.accuracy,
              100 * result.test.macro_f1, result.test.instances);
  }
  if (!config.checkpoint.save.empty()) {  // first: a bad predictions path must not lose the classifier
    classifier.save(config.checkpoint.save, {{"best_epoch", result.best_epoch},
                                             {"dev", scores_json(result.dev)},
                                             {"test", scores_json(result.test)}});
    if (rank0) log::info("discourse", "saved to {}", config.checkpoint.save);
  }
  if (rank0 && !options.predictions.empty() && test.size() > 0) {
    write_discourse_predictions(options.predictions, test_text, classifier.vocabularies().classes, test_probs);
  }
  for (const torch::Tensor& p : classifier.net()->parameters()) result.final_params.push_back(p.detach().cpu());
  return result;
}

}  // namespace foldtron
