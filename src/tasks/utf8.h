// UTF-8 of code points, for the recipes' text code (BLEU's tokenizers, the corpus builders).
#pragma once

#include <string>

namespace foldtron {

// Appends the UTF-8 bytes of `code` (below U+110000; a surrogate is encoded as it is, so text
// decoded leniently round-trips; callers that must not produce one check first).
void append_utf8(std::string& out, char32_t code);

}  // namespace foldtron
