// The baseline and the multi-grained discourse classifiers (see model.h).
#include "tasks/discourse/model.h"

#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/math.h"

namespace foldtron {
namespace {

// Rows [b, longest] of per-instance tensors [n, ...], zero-padded.
torch::Tensor pad_rows(const std::vector<torch::Tensor>& rows, torch::ScalarType dtype) {
  int64_t longest = 1;
  for (const torch::Tensor& r : rows) longest = std::max(longest, r.size(0));
  std::vector<int64_t> shape{static_cast<int64_t>(rows.size()), longest};
  if (!rows.empty()) {
    for (int64_t d = 1; d < rows[0].dim(); ++d) shape.push_back(rows[0].size(d));
  }
  torch::Tensor out = torch::zeros(shape, dtype);
  for (size_t i = 0; i < rows.size(); ++i) out[static_cast<int64_t>(i)].narrow(0, 0, rows[i].size(0)).copy_(rows[i]);
  return out;
}

}  // namespace

EncodedSet pack(const std::vector<EncodedInstance>& instances, torch::Device device) {
  std::vector<torch::Tensor> w1, w2, c1, c2, x1, x2, pair;
  std::vector<int64_t> labels, connectives;
  EncodedSet set;
  for (const EncodedInstance& e : instances) {
    w1.push_back(e.arg1.words);
    w2.push_back(e.arg2.words);
    c1.push_back(e.arg1.chars);
    c2.push_back(e.arg2.chars);
    if (e.arg1.context.defined()) {
      x1.push_back(e.arg1.context);
      x2.push_back(e.arg2.context);
    }
    if (e.pair.defined()) pair.push_back(e.pair);
    labels.push_back(e.labels.empty() ? 0 : e.labels[0]);  // (no label: blind input to predict)
    connectives.push_back(e.connective);
    set.length1.push_back(e.arg1.words.size(0));
    set.length2.push_back(e.arg2.words.size(0));
  }
  const auto on = [&](const torch::Tensor& t) { return t.to(device); };
  set.words1 = on(pad_rows(w1, torch::kLong));
  set.words2 = on(pad_rows(w2, torch::kLong));
  set.chars1 = on(c1.empty() ? torch::zeros({0, 1, 1}, torch::kLong) : pad_rows(c1, torch::kLong));
  set.chars2 = on(c2.empty() ? torch::zeros({0, 1, 1}, torch::kLong) : pad_rows(c2, torch::kLong));
  if (!x1.empty()) {
    set.context1 = on(pad_rows(x1, torch::kFloat));
    set.context2 = on(pad_rows(x2, torch::kFloat));
  }
  if (!pair.empty()) set.pair = on(torch::stack(pair));
  set.labels = on(torch::tensor(labels, torch::kLong));
  set.connectives = on(torch::tensor(connectives, torch::kLong));
  std::vector<int64_t> relation(2 * instances.size());  // [first, last] of each instance's run of one ID
  for (size_t i = 0; i < instances.size(); ++i) {
    relation[2 * i] = i > 0 && instances[i - 1].id == instances[i].id ? relation[2 * (i - 1)] : static_cast<int64_t>(i);
  }
  for (size_t i = instances.size(); i-- > 0;) {
    const bool same = i + 1 < instances.size() && instances[i + 1].id == instances[i].id;
    relation[2 * i + 1] = same ? relation[2 * (i + 1) + 1] : static_cast<int64_t>(i);
  }
  set.relation_slots = on(torch::tensor(relation, torch::kLong).reshape({-1, 2}));
  return set;
}

DiscourseBatch collate(const EncodedSet& set, const std::vector<int64_t>& indices, bool own_slots) {
  int64_t n1 = 1, n2 = 1;
  for (const int64_t i : indices) {
    n1 = std::max(n1, set.length1.at(static_cast<size_t>(i)));
    n2 = std::max(n2, set.length2.at(static_cast<size_t>(i)));
  }
  const torch::Tensor index = torch::tensor(indices, torch::kLong).to(set.labels.device());
  const auto rows = [&](const torch::Tensor& t, int64_t length) {
    return t.defined() ? t.index_select(0, index).narrow(1, 0, std::min(length, t.size(1))) : torch::Tensor();
  };
  DiscourseBatch b;
  b.words1 = rows(set.words1, n1);
  b.words2 = rows(set.words2, n2);
  b.chars1 = rows(set.chars1, n1);
  b.chars2 = rows(set.chars2, n2);
  b.context1 = rows(set.context1, n1);
  b.context2 = rows(set.context2, n2);
  if (set.pair.defined()) b.pair = set.pair.index_select(0, index);
  b.labels = set.labels.index_select(0, index);
  b.connectives = set.connectives.index_select(0, index);
  b.slots = own_slots ? set.relation_slots.index_select(0, index) : torch::full({index.size(0), 2}, -1, index.options());
  return b;
}

Grains parse_grains(const std::string& text) {
  Grains g;
  std::istringstream in(text);
  for (std::string word; in >> word;) {
    if (word == "char") {
      g.chars = true;
    } else if (word == "word") {
      g.words = true;
    } else if (word == "context") {
      g.context = true;
    } else if (word == "pair") {
      g.pair = true;
    } else {
      throw ConfigError("discourse.grains", fmt::format("unknown grain '{}'", word),
                        "use any of: char word context pair");
    }
  }
  return g;
}

DiscourseNetImpl::DiscourseNetImpl(const DiscourseConfig& config, const DiscourseSizes& sizes)
    : baseline_(config.model == "baseline"),
      memory_(config.memory),
      grains_(parse_grains(config.grains)),
      kmax_(config.kmax),
      alpha_(config.memory_alpha) {
  namespace nn = torch::nn;
  dropout_ = register_module("dropout", nn::Dropout(config.dropout));
  if (baseline_) {
    width_ = 2 * sizes.context;
    classifier_ = register_module("classifier", nn::Linear(width_, sizes.classes));
    return;
  }
  const int64_t c = config.channels;
  int64_t input = 0;
  if (grains_.chars) {
    char_embedding_ = register_module(
        "char_embedding", nn::Embedding(nn::EmbeddingOptions(sizes.characters, config.char_dim).padding_idx(0)));
    char_convs_ = register_module("char_convs", nn::ModuleList());
    for (const int64_t width : config.char_widths) {
      char_convs_->push_back(nn::Conv1d(nn::Conv1dOptions(config.char_dim, config.char_channels, width)));
    }
    const int64_t features = config.char_channels * static_cast<int64_t>(config.char_widths.size());
    highways_ = register_module("highways", nn::ModuleList());
    for (int64_t i = 0; i < config.highway_layers; ++i) highways_->push_back(nn::Linear(features, 2 * features));
    input += features;
  }
  if (grains_.words) {
    word_embedding_ =
        register_module("word_embedding", nn::Embedding(nn::EmbeddingOptions(sizes.words, config.word_dim).padding_idx(0)));
    input += config.word_dim;
  }
  if (grains_.context) input += sizes.context;
  input_ = register_module("input", nn::Linear(input, c));
  gated_convs_ = register_module("gated_convs", nn::ModuleList());
  attentions_ = register_module("attentions", nn::ModuleList());
  for (int64_t l = 0; l < config.conv_layers; ++l) {
    gated_convs_->push_back(nn::Conv1d(nn::Conv1dOptions(c, 2 * c, config.conv_width).padding(config.conv_width / 2)));
    if (grains_.pair) attentions_->push_back(nn::Linear(nn::LinearOptions(c, c).bias(false)));
  }
  const int64_t pooled = config.conv_layers * (grains_.pair ? 4 : 2) * kmax_ * c;
  width_ = config.hidden;
  pooled_norm_ = register_module("pooled_norm", nn::LayerNorm(nn::LayerNormOptions({pooled})));
  pair_ = register_module("pair", nn::Linear(pooled, width_));
  classifier_ = register_module("classifier", nn::Linear(memory_ ? 2 * width_ : width_, sizes.classes));
  if (config.connective_weight > 0) {
    connective_ = register_module("connective", nn::Linear(width_, sizes.connectives));
  }
  if (memory_) {
    memory_w_ = register_parameter("memory_w", torch::eye(width_) / std::sqrt(static_cast<double>(width_)));
    memory_u_ = register_parameter("memory_u", torch::zeros({width_}));
  }
}

torch::Tensor DiscourseNetImpl::characters(const torch::Tensor& chars) {
  const int64_t b = chars.size(0), n = chars.size(1), c = chars.size(2);
  const torch::Tensor e = char_embedding_(chars.reshape({b * n, c})).transpose(1, 2);  // [b n, dc, c]
  std::vector<torch::Tensor> pooled;
  for (const auto& conv : *char_convs_) {
    pooled.push_back(torch::tanh(conv->as<torch::nn::Conv1d>()->forward(e)).amax(2));  // [b n, filters]
  }
  torch::Tensor x = torch::cat(pooled, 1);
  for (const auto& layer : *highways_) {
    const std::vector<torch::Tensor> parts = layer->as<torch::nn::Linear>()->forward(x).chunk(2, 1);
    const torch::Tensor gate = torch::sigmoid(parts[0]);
    x = gate * torch::relu(parts[1]) + (1 - gate) * x;
  }
  return x.reshape({b, n, x.size(1)});
}

torch::Tensor DiscourseNetImpl::argument_input(const torch::Tensor& words, const torch::Tensor& chars,
                                               const torch::Tensor& context) {
  std::vector<torch::Tensor> parts;
  if (grains_.chars) parts.push_back(characters(chars));
  if (grains_.words) parts.push_back(word_embedding_(words));
  if (grains_.context) {
    FT_CHECK(context.defined(), "the context grain reads the encoder's vectors");
    parts.push_back(context);
  }
  return input_(dropout_(torch::cat(parts, 2)));  // [b, n, C]
}

torch::Tensor DiscourseNetImpl::kmax(const torch::Tensor& x, const torch::Tensor& mask) const {
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2), k = std::min(kmax_, n);
  const torch::Tensor m = mask.unsqueeze(2).expand_as(x);
  const torch::Tensor index = std::get<0>(std::get<1>(x.masked_fill(m.logical_not(), -kInf).topk(k, 1)).sort(1));
  torch::Tensor values = x.gather(1, index).masked_fill(m.gather(1, index).logical_not(), 0);  // [b, k, C]
  if (k < kmax_) values = torch::cat({values, torch::zeros({b, kmax_ - k, c}, x.options())}, 1);
  return values.reshape({b, kmax_ * c});
}

torch::Tensor DiscourseNetImpl::represent(const DiscourseBatch& batch) {
  if (batch.size() == 0) return torch::zeros({0, width_}, torch::TensorOptions().device(batch.labels.device()));
  if (baseline_) {
    FT_CHECK(batch.pair.defined(), "the baseline reads the pooled pair encoding");
    return dropout_(batch.pair);
  }
  const torch::Tensor mask1 = batch.words1 != 0, mask2 = batch.words2 != 0;  // [b, n]
  torch::Tensor x1 = argument_input(batch.words1, batch.chars1, batch.context1) * mask1.unsqueeze(2);
  torch::Tensor x2 = argument_input(batch.words2, batch.chars2, batch.context2) * mask2.unsqueeze(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(x1.size(2)));
  std::vector<torch::Tensor> pooled;
  for (size_t l = 0; l < gated_convs_->size(); ++l) {
    const auto conv = gated_convs_[l]->as<torch::nn::Conv1d>();
    const auto gated = [&](const torch::Tensor& x, const torch::Tensor& mask) {  // [b, n, C], residual
      const torch::Tensor y = torch::glu(conv->forward(x.transpose(1, 2)), 1).transpose(1, 2);
      return (x + y) * mask.unsqueeze(2);
    };
    x1 = gated(x1, mask1);
    x2 = gated(x2, mask2);
    pooled.push_back(kmax(x1, mask1));
    pooled.push_back(kmax(x2, mask2));
    if (!grains_.pair) continue;
    const torch::Tensor m = attentions_[l]->as<torch::nn::Linear>()->forward(x1).bmm(x2.transpose(1, 2)) * scale;  // [b, n1, n2]
    const torch::Tensor to2 = m.masked_fill(mask2.unsqueeze(1).logical_not(), -kInf).softmax(2);
    const torch::Tensor to1 = m.transpose(1, 2).masked_fill(mask1.unsqueeze(1).logical_not(), -kInf).softmax(2);
    const torch::Tensor read1 = to2.bmm(x2) * mask1.unsqueeze(2), read2 = to1.bmm(x1) * mask2.unsqueeze(2);
    pooled.push_back(kmax(read1, mask1));
    pooled.push_back(kmax(read2, mask2));
    x1 = x1 + read1;
    x2 = x2 + read2;
  }
  return torch::tanh(pair_(dropout_(pooled_norm_(torch::cat(pooled, 1)))));  // [b, hidden]
}

torch::Tensor DiscourseNetImpl::log_probs(const torch::Tensor& z, const MemoryRead* read) {
  if (!memory_) return torch::log_softmax(classifier_(z), 1);
  const torch::Tensor key = read ? read->key : torch::zeros_like(z);
  torch::Tensor p = torch::softmax(classifier_(torch::cat({z, key}, 1)), 1);  // [b, K]
  if (read) p = torch::where(read->found.unsqueeze(1), (1 - alpha_) * p + alpha_ * read->value, p);
  return p.clamp_min(1e-12).log();
}

torch::Tensor DiscourseNetImpl::connective_logits(const torch::Tensor& z) {
  return connective_ ? connective_(z) : torch::Tensor();
}

}  // namespace foldtron
