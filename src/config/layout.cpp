// Parallel layouts: order parsing and the layout checks shared by config validation and
// `foldtron topology` (see layout.h).
#include "config/layout.h"

#include <algorithm>

#include <fmt/format.h>

#include "config/config.h"
#include "core/text.h"

namespace foldtron {

const char* axis_name(Axis axis) {
  static constexpr std::array<const char*, kNumAxes> names{"tp", "cp", "ep", "dp", "pp"};
  return names.at(static_cast<size_t>(axis));
}

ParallelLayout layout_of(const ParallelConfig& parallel, int64_t world) {
  return ParallelLayout{world, parallel.tp, parallel.cp, parallel.pp, parallel.ep, parallel.expert_tp(),
                        parallel.order};
}

std::vector<Axis> parse_order(const std::string& order, std::vector<ConfigProblem>& problems) {
  const std::vector<std::string> all{"tp", "cp", "ep", "dp", "pp"};
  const std::string hint = "name each of tp, cp, ep, dp, pp exactly once, separated by '-', fastest first; "
                           "the default is tp-cp-ep-dp-pp";
  std::vector<Axis> axes;
  for (const std::string& token : split(order, '-')) {
    const auto it = std::find(all.begin(), all.end(), token);
    if (it == all.end()) {
      problems.push_back({"parallel.order", fmt::format("'{}' has an unknown axis '{}'", order, token), hint});
      return {};
    }
    const Axis axis = static_cast<Axis>(it - all.begin());
    if (std::find(axes.begin(), axes.end(), axis) != axes.end()) {
      problems.push_back({"parallel.order", fmt::format("'{}' names axis '{}' twice", order, token), hint});
      return {};
    }
    axes.push_back(axis);
  }
  if (axes.size() != all.size()) {
    std::vector<std::string> missing;
    for (size_t i = 0; i < all.size(); ++i) {
      if (std::find(axes.begin(), axes.end(), static_cast<Axis>(i)) == axes.end()) missing.push_back(all[i]);
    }
    problems.push_back({"parallel.order", fmt::format("'{}' is missing {}", order, join(missing, ", ")), hint});
    return {};
  }
  return axes;
}

void check_layout(const ParallelLayout& layout, std::vector<ConfigProblem>& problems) {
  const std::pair<const char*, int64_t> sizes[] = {{"world", layout.world}, {"parallel.tp", layout.tp},
                                                   {"parallel.cp", layout.cp}, {"parallel.pp", layout.pp},
                                                   {"parallel.ep", layout.ep}, {"parallel.etp", layout.etp}};
  bool positive = true;
  for (const auto& [field, value] : sizes) {
    if (value < 1) {
      problems.push_back({field, fmt::format("must be at least 1, got {}", value), "parallel sizes are positive"});
      positive = false;
    }
  }
  parse_order(layout.order, problems);
  if (!positive) return;
  const auto product_text = [](int64_t product) {
    return product == INT64_MAX ? std::string("more than 2^63") : std::to_string(product);
  };
  const int64_t attention = layout.attention_ranks();
  if (layout.world % attention != 0) {
    problems.push_back({"parallel", fmt::format("world size {} is not divisible by tp*cp*pp = {} (tp {}, cp {}, pp {})",
                                                layout.world, product_text(attention), layout.tp, layout.cp, layout.pp),
                        "choose tp, cp and pp whose product divides the number of ranks; dp is world/(tp*cp*pp)"});
  }
  const int64_t moe = layout.expert_ranks();
  if (layout.world % moe != 0) {
    problems.push_back({"parallel", fmt::format("world size {} is not divisible by etp*ep*pp = {} (etp {}, ep {}, pp {})",
                                                layout.world, product_text(moe), layout.etp, layout.ep, layout.pp),
                        "choose etp, ep and pp whose product divides the number of ranks; edp is world/(etp*ep*pp)"});
  }
}

void check_layout_trainable(const ParallelLayout& layout, std::vector<ConfigProblem>& problems) {
  const bool pp_last = layout.order.size() >= 2 && layout.order.compare(layout.order.size() - 2, 2, "pp") == 0;
  if (!pp_last && layout.pp > 1 && layout.dp() != layout.edp()) {
    problems.push_back({"parallel.order",
                        fmt::format("'{}' does not end in pp, so with pp {} the attention dp ({}) must equal the "
                                    "expert edp ({}) for both grids to share pipeline groups",
                                    layout.order, layout.pp, layout.dp(), layout.edp()),
                        "put pp last in the order (tp-cp-ep-dp-pp), or choose etp*ep = tp*cp"});
  }
}

}  // namespace foldtron
