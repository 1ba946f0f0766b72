// Tensors between ranks (see stream.h).
#include "parallel/stream.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/text.h"

namespace foldtron {

std::string spec_text(const StreamSpec& spec) {
  std::string text;
  for (const TensorSpec& t : spec) {
    text += fmt::format("{}{} {}", text.empty() ? "" : ", ", shape_text(t.shape),
                        c10::toString(t.options.dtype().toScalarType()));
  }
  return text.empty() ? "nothing" : text;
}

}  // namespace foldtron
