// The discourse classifier on one rank: encoding, prediction, the memory's refresh, saving and
// loading (see classifier.h).
#include "tasks/discourse/classifier.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/safetensors.h"
#include "config/config_load.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/text.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kFormat = 1;

std::vector<int64_t> iota(int64_t begin, int64_t end) {
  std::vector<int64_t> out;
  for (int64_t i = begin; i < end; ++i) out.push_back(i);
  return out;
}

// Whitespace-separated words.
std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

std::string memory_file(int64_t rank, int64_t dp) { return fmt::format("memory-{}-of-{}.safetensors", rank, dp); }

// Whether this rank writes its dp index's files (one rank per dp index: tp, pp and cp rank 0).
bool writes_for_dp(const ProcessGroups& groups) {
  return groups.tp().rank() == 0 && groups.pp().rank() == 0 && groups.cp().rank() == 0;
}

}  // namespace

std::vector<std::string> discourse_types(const DiscourseConfig& config) { return split_words(config.types); }

void validate_discourse_config(const Config& config) {
  const DiscourseConfig& d = config.discourse;
  std::vector<ConfigProblem> problems;
  const auto check = [&](bool ok, const std::string& key, const std::string& message, const std::string& hint) {
    if (!ok) problems.push_back({"discourse." + key, message, hint});
  };
  check(!d.data.empty(), "data", "no corpus folder", "set it to a folder of train.json, dev.json and test.json");
  check(d.level == "4way" || d.level == "11way", "level", fmt::format("'{}' is not a level", d.level),
        "use 4way or 11way");
  check(d.model == "baseline" || d.model == "multigrained", "model", fmt::format("unknown model '{}'", d.model),
        "use baseline or multigrained");
  check(!discourse_types(d).empty(), "types", "no relation type", "name at least one, e.g. Implicit");
  Grains grains;
  bool grains_read = true;
  try {
    grains = parse_grains(d.grains);
  } catch (const ConfigError& e) {
    problems.insert(problems.end(), e.problems().begin(), e.problems().end());
    grains_read = false;
  }
  if (d.model == "multigrained" && grains_read) {
    check(grains.chars || grains.words || grains.context, "grains", fmt::format("'{}' has no input grain", d.grains),
          "keep at least one of char, word and context");
    check(!grains.context || !d.encoder.empty(), "grains", "the context grain reads discourse.encoder, which is empty",
          "set discourse.encoder to a masked language modelling checkpoint, or drop context from the grains");
  } else if (d.model == "baseline") {
    check(!d.encoder.empty(), "encoder", "the baseline reads the pretrained encoder, and none is set",
          "set discourse.encoder to a masked language modelling checkpoint");
    check(!d.memory, "memory", "the memory is part of the multigrained model", "set discourse.model: multigrained");
  }
  for (const auto& [key, value] : std::vector<std::pair<std::string, int64_t>>{
           {"max_words", d.max_words}, {"word_vocab", d.word_vocab}, {"word_dim", d.word_dim}, {"char_dim", d.char_dim},
           {"char_channels", d.char_channels}, {"conv_layers", d.conv_layers}, {"channels", d.channels},
           {"kmax", d.kmax}, {"hidden", d.hidden}, {"epochs", d.epochs}, {"batch_size", d.batch_size},
           {"eval_batch_size", d.eval_batch_size}}) {
    check(value > 0, key, fmt::format("{} must be positive", value), "set a positive integer");
  }
  check(d.highway_layers >= 0, "highway_layers", fmt::format("{} is negative", d.highway_layers), "use 0 or more");
  check(d.conv_width > 0 && d.conv_width % 2 == 1, "conv_width", fmt::format("{} is not a positive odd number", d.conv_width),
        "use 1, 3, 5, ... (the convolution keeps the argument's length)");
  check(!d.char_widths.empty(), "char_widths", "no width", "list the character convolutions' widths, e.g. [2, 3, 4]");
  for (const int64_t w : d.char_widths) {
    check(w > 0 && w <= 20, "char_widths", fmt::format("width {} is outside 1..20", w), "words are read as 20 characters");
  }
  check(d.dropout >= 0 && d.dropout < 1, "dropout", fmt::format("{} is outside [0, 1)", d.dropout), "use e.g. 0.3");
  check(d.connective_weight >= 0, "connective_weight", fmt::format("{} is negative", d.connective_weight), "use 0 or more");
  check(d.memory_alpha >= 0 && d.memory_alpha <= 1, "memory_alpha", fmt::format("{} is outside [0, 1]", d.memory_alpha),
        "use e.g. 0.3");
  check(d.lr > 0, "lr", fmt::format("{} is not positive", d.lr), "use e.g. 1e-3");
  check(d.weight_decay >= 0, "weight_decay", fmt::format("{} is negative", d.weight_decay), "use 0 or more");
  check(d.clip_grad >= 0, "clip_grad", fmt::format("{} is negative", d.clip_grad), "use 0 (none) or more");
  if (config.parallel.cp != 1) {
    problems.push_back({"parallel.cp", fmt::format("the discourse job runs with cp 1, not {}", config.parallel.cp),
                        "drop --cp (the arguments are short)"});
  }
  if (!problems.empty()) throw ConfigError(std::move(problems));
}

std::vector<DiscourseInstance> read_discourse_split(const DiscourseConfig& config, const std::string& split,
                                                    bool duplicate) {
  const fs::path path = fs::path(config.data) / (split + ".json");
  if (!fs::exists(path)) {
    throw DataError(fmt::format("discourse.data has no {}", path.string()),
                    "write the splits with foldtron discourse split (PDTB) or discourse corpus (silver)");
  }
  const SenseLevel level = parse_sense_level(config.level, "discourse.level");
  const std::vector<std::string> classes = level_classes(level);
  std::vector<DiscourseInstance> out;
  for (DiscourseInstance& instance :
       discourse_instances(read_conll_relations(path.string()), discourse_types(config), level, duplicate)) {
    std::vector<std::string> labels;
    for (const std::string& label : instance.labels) {
      if (std::find(classes.begin(), classes.end(), label) != classes.end()) labels.push_back(label);
    }
    if (labels.empty()) continue;
    instance.labels = std::move(labels);
    out.push_back(std::move(instance));
  }
  return out;
}

namespace {

// "out/", "./out" -> "out".
fs::path normal_folder(const std::string& dir) {
  fs::path path = fs::path(dir).lexically_normal();
  return path.has_filename() || !path.has_parent_path() ? path : path.parent_path();
}

}  // namespace

void check_save_folder(const std::string& dir) {
  const fs::path path = normal_folder(dir);
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::exists(path / "discourse.json", ec) && !fs::is_empty(path, ec)) {
    throw CheckpointError(fmt::format("checkpoint.save '{}' exists and is not a discourse classifier: saving would "
                                      "replace it", dir),
                         "choose a new folder (or one that foldtron discourse train saved before)");
  }
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec) || access(parent.c_str(), W_OK) != 0) {
    throw CheckpointError(fmt::format("checkpoint.save '{}': its folder '{}' does not exist or cannot be written", dir,
                                      parent.string()),
                          "create it, or save elsewhere");
  }
}

DiscourseClassifier::DiscourseClassifier(const Config& config, DiscourseVocabularies vocabularies, int64_t slots,
                                         ProcessGroups& groups, torch::Device device)
    : config_(config),
      level_(parse_sense_level(config.discourse.level, "discourse.level")),
      vocabularies_(std::move(vocabularies)),
      groups_(groups),
      device_(device) {
  // The folder's config names the encoder by an absolute path, so it loads from anywhere.
  if (!config_.discourse.encoder.empty()) config_.discourse.encoder = fs::absolute(config_.discourse.encoder).string();
  const DiscourseConfig& d = config_.discourse;
  // The encoder runs only where it is read (a multigrained run without the context grain skips it).
  if (!d.encoder.empty() && (d.model == "baseline" || parse_grains(d.grains).context)) {
    encoder_ = std::make_unique<ContextEncoder>(config_, groups, device);
  }
  DiscourseSizes sizes;
  sizes.classes = static_cast<int64_t>(vocabularies_.classes.size());
  sizes.words = vocabularies_.words.size();
  sizes.characters = vocabularies_.characters.size();
  sizes.connectives = vocabularies_.connectives.size();
  sizes.context = encoder_ ? encoder_->hidden_size() : 0;
  torch::manual_seed(static_cast<uint64_t>(d.seed));  // the same initial network on every rank
  net_ = DiscourseNet(d, sizes);
  net_->to(device);
  if (d.memory) {
    memory_ = std::make_unique<MemoryBank>(slots, net_->representation_width(), sizes.classes, groups.dp(), device);
  }
  // Dropout: a stream per data-parallel rank.
  torch::manual_seed(static_cast<uint64_t>(d.seed) * 1000003ULL + 1 + static_cast<uint64_t>(groups.dp().rank()));
}

DiscourseClassifier::DiscourseClassifier(const Config& config, const std::vector<DiscourseInstance>& train,
                                         ProcessGroups& groups, torch::Device device)
    : DiscourseClassifier(config,
                          build_vocabularies(train, parse_sense_level(config.discourse.level, "discourse.level"),
                                             config.discourse),
                          static_cast<int64_t>(train.size()), groups, device) {}

DiscourseClassifier::~DiscourseClassifier() = default;

EncodedSet DiscourseClassifier::encode(const std::vector<DiscourseInstance>& instances) const {
  std::vector<EncodedInstance> out = encode_instances(instances, vocabularies_, config_.discourse);
  if (encoder_) encoder_->encode(out, instances, config_.discourse.model == "baseline");
  return pack(out, device_);
}

DiscourseClassifier::Output DiscourseClassifier::forward(const DiscourseBatch& batch) {
  Output out;
  out.z = net_->represent(batch);
  if (net_->is_training() && batch.size() == 0) out.z.requires_grad_(true);  // its rank still joins the read's backward
  if (memory_ && memory_->filled()) out.read = memory_->read(out.z, net_->memory_w(), net_->memory_u(), batch.slots);
  out.log_probs = net_->log_probs(out.z, out.read ? &*out.read : nullptr);
  return out;
}

torch::Tensor DiscourseClassifier::predict(const EncodedSet& instances) {
  const int64_t n = instances.size(), dp = groups_.dp().size(), rank = groups_.dp().rank();
  const int64_t chunk = config_.discourse.eval_batch_size, classes = static_cast<int64_t>(vocabularies_.classes.size());
  const auto [begin, end] = even_range(n, dp, rank);
  const int64_t largest = (n + dp - 1) / dp, chunks = (largest + chunk - 1) / chunk;
  const bool training = net_->is_training();
  net_->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> mine;
  for (int64_t c = 0; c < chunks; ++c) {  // the same number of reads on every rank
    const int64_t first = std::min(end, begin + c * chunk), last = std::min(end, first + chunk);
    mine.push_back(forward(collate(instances, iota(first, last), false)).log_probs.exp().to(torch::kFloat));
  }
  net_->train(training);
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < dp; ++r) rows.push_back(even_range(n, dp, r).second - even_range(n, dp, r).first);
  const torch::Tensor local = mine.empty() ? torch::zeros({0, classes}, torch::TensorOptions().device(device_))
                                           : torch::cat(mine);  // [end - begin, K]
  return groups_.dp().all_gather(local, rows).cpu();  // dp: every rank's predictions, in instance order
}

double DiscourseClassifier::refresh_memory(const EncodedSet& train) {
  FT_CHECK(memory_ != nullptr, "refreshing a memory the classifier has");
  const int64_t chunk = config_.discourse.eval_batch_size, first_slot = memory_->first();
  const int64_t largest = (memory_->slots() + groups_.dp().size() - 1) / groups_.dp().size();
  const bool training = net_->is_training();
  net_->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> keys, correct, labels;
  for (int64_t c = 0; c * chunk < largest; ++c) {  // the same number of reads on every rank
    const int64_t first = std::min(memory_->size(), c * chunk), last = std::min(memory_->size(), first + chunk);
    const DiscourseBatch batch = collate(train, iota(first_slot + first, first_slot + last), true);
    const Output out = forward(batch);
    keys.push_back(out.z);
    labels.push_back(batch.labels);
    correct.push_back(out.log_probs.argmax(1) == batch.labels);
  }
  net_->train(training);
  const torch::Tensor right = torch::cat(correct);
  torch::Tensor counts = right.sum().to(torch::kDouble).reshape({1});
  groups_.dp().all_reduce(counts);  // dp: correct instances over every shard
  const torch::Tensor active =
      config_.discourse.memory_active_set ? right : torch::ones_like(right, torch::kBool);
  memory_->store(torch::cat(keys), torch::cat(labels), active);  // dp: the class counts of the new bank
  return counts.item<double>() / static_cast<double>(std::max<int64_t>(1, memory_->slots()));  // (one sync an epoch)
}

DiscourseScores DiscourseClassifier::score(const std::vector<DiscourseInstance>& instances,
                                           const torch::Tensor& probs) const {
  std::vector<std::vector<std::string>> gold;
  std::vector<std::string> predictions;
  const torch::Tensor best = probs.argmax(1);
  for (size_t i = 0; i < instances.size(); ++i) {
    gold.push_back(instances[i].labels);
    predictions.push_back(vocabularies_.classes.at(static_cast<size_t>(best[static_cast<int64_t>(i)].item<int64_t>())));
  }
  return score_senses(gold, predictions, level_);
}

void DiscourseClassifier::save(const std::string& dir_given, const nlohmann::json& summary) const {
  const std::string dir = normal_folder(dir_given).string();
  check_save_folder(dir);
  const std::string partial = dir + ".partial";
  Communicator& world = groups_.world();
  if (world.rank() == 0) {
    if (const std::error_code error = remove_tree(partial)) {
      throw CheckpointError(fmt::format("cannot remove the leftovers of an earlier save '{}': {}", partial, error.message()),
                            "remove that folder, or check the disk");
    }
    make_folder(partial);
  }
  world.barrier();  // world: the folder exists before anyone writes into it
  if (world.rank() == 0) {
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& p : net_->named_parameters()) tensors.emplace_back(p.key(), p.value().detach());
    write_safetensors((fs::path(partial) / "model.safetensors").string(), tensors);
    nlohmann::json meta = summary;
    meta["format"] = kFormat;
    meta["config"] = config_to_yaml(config_);
    meta["vocabularies"] = vocabularies_json(vocabularies_);
    meta["dp"] = groups_.dp().size();
    meta["memory_slots"] = memory_ ? memory_->slots() : 0;
    write_file_atomically((fs::path(partial) / "discourse.json").string(), meta.dump(1) + "\n");
  }
  if (memory_ && writes_for_dp(groups_)) {
    write_safetensors((fs::path(partial) / memory_file(groups_.dp().rank(), groups_.dp().size())).string(),
                      {{"keys", memory_->keys()},
                       {"labels", memory_->labels()},
                       {"active", memory_->active().to(torch::kUInt8)}});
  }
  world.barrier();  // world: every file is complete before the folder moves into place
  if (world.rank() == 0) {
    try {
      remove_tree(dir + ".old");  // where this fails, the rename below names the folder
      if (fs::exists(dir)) fs::rename(dir, dir + ".old");  // (a classifier: check_save_folder above)
      fs::rename(partial, dir);
      remove_tree(dir + ".old");  // best effort: the next save removes it first
    } catch (const fs::filesystem_error& e) {
      throw CheckpointError(fmt::format("cannot move the saved classifier into '{}': {}", dir, e.code().message()),
                            fmt::format("it is complete in '{}'", partial));
    }
    sync_dir(fs::path(dir).parent_path().empty() ? "." : fs::path(dir).parent_path().string());
  }
  world.barrier();  // world: the folder is in place before anyone reads it
}

namespace {

nlohmann::json read_meta(const std::string& dir) {
  const std::string path = (fs::path(dir) / "discourse.json").string();
  if (!fs::exists(path)) {
    throw CheckpointError(fmt::format("'{}' has no discourse.json: not a discourse classifier", dir),
                          "pass the checkpoint.save folder of foldtron discourse train");
  }
  try {
    nlohmann::json meta = nlohmann::json::parse(read_text_file(path, "the classifier's description"));
    if (meta.at("format").get<int64_t>() != kFormat) {
      throw CheckpointError(fmt::format("{} is format {}; this build reads format {}", path,
                                        meta.at("format").get<int64_t>(), kFormat),
                            "load it with the foldtron that wrote it, or train again");
    }
    meta.at("config").get<std::string>();  // present and text (vocabularies: read with their own check)
    return meta;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("{} does not read: {}", path, e.what()), "train the classifier again");
  }
}

}  // namespace

Config discourse_saved_config(const std::string& dir) {
  return load_config({"", "", {}}, read_meta(dir).at("config").get<std::string>());
}

std::unique_ptr<DiscourseClassifier> DiscourseClassifier::load(const std::string& dir, const Config& config,
                                                               ProcessGroups& groups, torch::Device device) {
  const nlohmann::json meta = read_meta(dir);
  const std::string meta_path = (fs::path(dir) / "discourse.json").string();
  const int64_t slots = meta.value("memory_slots", int64_t{0}), saved_dp = meta.value("dp", int64_t{1});
  if (config.discourse.memory && saved_dp != groups.dp().size()) {
    throw CheckpointError(fmt::format("'{}' holds its memory over {} data-parallel ranks; this job has {}", dir,
                                      saved_dp, groups.dp().size()),
                          fmt::format("run with {} ranks per tp x pp group (mpirun -np {} with the same --tp/--pp)",
                                      saved_dp, saved_dp * groups.tp().size() * groups.pp().size()));
  }
  std::unique_ptr<DiscourseClassifier> c(new DiscourseClassifier(
      config, vocabularies_from_json(meta.value("vocabularies", nlohmann::json()), meta_path), slots, groups, device));
  const SafetensorsFile model((fs::path(dir) / "model.safetensors").string());
  torch::NoGradGuard no_grad;
  for (auto& p : c->net_->named_parameters()) {
    if (!model.has(p.key()) || model.shape(p.key()) != p.value().sizes().vec()) {
      throw CheckpointError(fmt::format("{}: parameter {} is missing or of another shape", model.path(), p.key()),
                            "the folder and its discourse.json do not belong together; train again");
    }
    p.value().copy_(model.load(p.key()).to(p.value().device()));
  }
  if (c->memory_) {
    const SafetensorsFile shard((fs::path(dir) / memory_file(groups.dp().rank(), groups.dp().size())).string());
    const std::vector<int64_t> keys{c->memory_->size(), c->memory_->width()}, rows{c->memory_->size()};
    if (!shard.has("keys") || !shard.has("labels") || !shard.has("active") || shard.shape("keys") != keys ||
        shard.shape("labels") != rows || shard.shape("active") != rows) {
      throw CheckpointError(fmt::format("{}: the memory shard is not keys [{}, {}], labels and active [{}]",
                                        shard.path(), keys[0], keys[1], rows[0]),
                            "the folder and its discourse.json do not belong together; train again");
    }
    // dp: the class counts of the whole bank
    c->memory_->store(shard.load("keys"), shard.load("labels"), shard.load("active").to(torch::kBool));
  }
  return c;
}

void write_discourse_predictions(const std::string& path, const std::vector<DiscourseInstance>& instances,
                                 const std::vector<std::string>& classes, const torch::Tensor& probs) {
  FT_CHECK(probs.size(0) == static_cast<int64_t>(instances.size()), "one row of probabilities per instance");
  const torch::Tensor p = probs.to(torch::kDouble).contiguous();
  const auto a = p.accessor<double, 2>();
  std::string text;
  for (size_t i = 0; i < instances.size(); ++i) {
    nlohmann::ordered_json probabilities = nlohmann::ordered_json::object();
    size_t best = 0;
    for (size_t k = 0; k < classes.size(); ++k) {
      probabilities[classes[k]] = a[static_cast<int64_t>(i)][static_cast<int64_t>(k)];
      if (a[static_cast<int64_t>(i)][static_cast<int64_t>(k)] > a[static_cast<int64_t>(i)][static_cast<int64_t>(best)]) best = k;
    }
    text += nlohmann::ordered_json{{"ID", instances[i].id}, {"Sense", classes[best]}, {"probabilities", probabilities}}
                .dump() +
            "\n";
  }
  write_file_atomically(path, text);
}

nlohmann::ordered_json scores_json(const DiscourseScores& s) {
  nlohmann::ordered_json per_class = nlohmann::ordered_json::object();
  for (const auto& [name, c] : s.per_class) {
    per_class[name] = {{"precision", c.precision}, {"recall", c.recall}, {"f1", c.f1}, {"gold", c.gold},
                       {"predicted", c.predicted}};
  }
  return nlohmann::ordered_json{{"instances", s.instances}, {"accuracy", s.accuracy}, {"macro_f1", s.macro_f1},
                                {"per_class", per_class},   {"binary_f1", s.binary_f1}, {"classes", s.classes},
                                {"confusion", s.confusion}};
}

}  // namespace foldtron
