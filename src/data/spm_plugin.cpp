// The sentencepiece plugin: a C interface over libsentencepiece's processor (encode, decode,
// pieces; training runs in foldtron_spm_train, a program of its own), built as its own module and
// loaded by data/tokenizer.cpp with dlopen(RTLD_LOCAL | RTLD_DEEPBIND). Debian's libsentencepiece
// carries its own copy of protobuf (3.14) and exports its symbols; linked into the process beside
// torch's libprotobuf (3.21) the two copies bind to each other and the process crashes at start.
// Kept local, each library uses its own. Buffers it returns are freed with ft_spm_free_buffer;
// `error` receives a malloc'ed message when a call fails (returns nonzero or null).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

// sentencepiece's own logging, silenced: in a module loaded with RTLD_DEEPBIND its std::cerr is
// not the process's (the executable holds the initialized copy), so writing to it crashes.
// Every failure comes back as a status instead.
namespace sentencepiece::logging {
void SetMinLogLevel(int level);
}

namespace {

char* copy(const std::string& text) {
  auto* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out != nullptr) std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

// Runs `body` (returns 0 or nonzero): a C++ exception never crosses the C interface; it becomes
// the error message.
template <typename Body>
int guarded(char** error, Body body) {
  try {
    return body();
  } catch (const std::exception& e) {
    *error = copy(e.what());
  } catch (...) {
    *error = copy("unknown failure in the sentencepiece plugin");
  }
  return 1;
}

// A malloc'ed copy of `size` bytes (at least one byte allocated); throws when memory runs out.
void* copy_bytes(const void* data, size_t size) {
  void* out = std::malloc(std::max<size_t>(1, size));
  if (out == nullptr) throw std::bad_alloc();
  if (size > 0) std::memcpy(out, data, size);
  return out;
}

sentencepiece::SentencePieceProcessor& processor(void* handle) {
  return *static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* ft_spm_load(const char* path, char** error) {
  sentencepiece::logging::SetMinLogLevel(4);  // above FATAL: nothing is written
  void* model = nullptr;
  guarded(error, [&] {
    auto p = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = p->Load(path);
    if (!status.ok()) {
      *error = copy(status.ToString());
      return 1;
    }
    model = p.release();
    return 0;
  });
  return model;
}

__attribute__((visibility("default"))) void ft_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

__attribute__((visibility("default"))) void ft_spm_free_buffer(void* buffer) { std::free(buffer); }

// The ids of `text` in a malloc'ed array of *count ints.
__attribute__((visibility("default"))) int ft_spm_encode(void* handle, const char* text, size_t length, int** ids,
                                                         size_t* count, char** error) {
  return guarded(error, [&] {
    std::vector<int> out;
    const auto status = processor(handle).Encode(std::string(text, length), &out);
    if (!status.ok()) {
      *error = copy(status.ToString());
      return 1;
    }
    *ids = static_cast<int*>(copy_bytes(out.data(), out.size() * sizeof(int)));
    *count = out.size();
    return 0;
  });
}

// The pieces of `text`, each followed by a '\0', in one malloc'ed buffer of *length bytes.
__attribute__((visibility("default"))) int ft_spm_encode_pieces(void* handle, const char* text, size_t length,
                                                                char** pieces, size_t* out_length, char** error) {
  return guarded(error, [&] {
    std::vector<std::string> out;
    const auto status = processor(handle).Encode(std::string(text, length), &out);
    if (!status.ok()) {
      *error = copy(status.ToString());
      return 1;
    }
    std::string joined;
    for (const std::string& piece : out) joined.append(piece).push_back('\0');
    *pieces = static_cast<char*>(copy_bytes(joined.data(), joined.size()));
    *out_length = joined.size();
    return 0;
  });
}

__attribute__((visibility("default"))) int ft_spm_decode(void* handle, const int* ids, size_t count, char** text,
                                                         size_t* length, char** error) {
  return guarded(error, [&] {
    std::string out;
    const auto status = processor(handle).Decode(std::vector<int>(ids, ids + count), &out);
    if (!status.ok()) {
      *error = copy(status.ToString());
      return 1;
    }
    *text = static_cast<char*>(copy_bytes(out.data(), out.size()));
    *length = out.size();
    return 0;
  });
}

__attribute__((visibility("default"))) int ft_spm_size(void* handle) { return processor(handle).GetPieceSize(); }

// The id of a whole piece, -1 when the vocabulary lacks it (PieceToId answers unk for those).
__attribute__((visibility("default"))) int ft_spm_piece_id(void* handle, const char* piece) {
  try {
    const auto& p = processor(handle);
    const int id = p.PieceToId(piece);
    return p.IsUnknown(id) && p.IdToPiece(id) != piece ? -1 : id;
  } catch (...) {
    return -1;
  }
}

// Piece `id` (0 <= id < size) as a malloc'ed string; null when memory runs out.
__attribute__((visibility("default"))) char* ft_spm_piece(void* handle, int id) {
  try {
    return copy(processor(handle).IdToPiece(id));
  } catch (...) {
    return nullptr;
  }
}

// 0 unk, 1 bos, 2 eos, 3 pad.
__attribute__((visibility("default"))) int ft_spm_special(void* handle, int which) {
  const auto& p = processor(handle);
  switch (which) {
    case 0: return p.unk_id();
    case 1: return p.bos_id();
    case 2: return p.eos_id();
    default: return p.pad_id();
  }
}

}  // extern "C"
