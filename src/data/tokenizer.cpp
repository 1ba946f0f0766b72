// Byte and sentencepiece tokenizers, and the sentencepiece trainer (see tokenizer.h).
#include "data/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>

#include <dlfcn.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "config/config.h"
#include "core/errors.h"

extern char** environ;

namespace foldtron {
namespace fs = std::filesystem;

namespace {

// The sentencepiece plugin (data/spm_plugin.cpp), loaded once, kept local (its protobuf must not
// meet torch's): FOLDTRON_SPM_PLUGIN, else the module beside the executable, else the build's.
struct SpmApi {
  void* (*load)(const char*, char**);
  void (*free_model)(void*);
  void (*free_buffer)(void*);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char**);
  int (*encode_pieces)(void*, const char*, size_t, char**, size_t*, char**);
  int (*decode)(void*, const int*, size_t, char**, size_t*, char**);
  int (*size)(void*);
  int (*piece_id)(void*, const char*);
  char* (*piece)(void*, int);
  int (*special)(void*, int);
};

// Where a file built beside bin/foldtron may be: $ENV_VAR, beside this executable, the build's.
std::vector<std::string> beside_foldtron(const char* env_var, const char* name, const char* built) {
  std::vector<std::string> paths;
  if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') paths.emplace_back(env);
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (!error) paths.push_back((exe.parent_path() / name).string());
  paths.emplace_back(built);
  return paths;
}

const SpmApi& spm() {
  static SpmApi api{};
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    void* module = nullptr;
    std::string tried;
    for (const std::string& path :
         beside_foldtron("FOLDTRON_SPM_PLUGIN", FOLDTRON_SPM_PLUGIN_NAME, FOLDTRON_SPM_PLUGIN_BUILT)) {
      module = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (module != nullptr) break;
      const char* why = ::dlerror();
      tried += fmt::format("\n  {}: {}", path, why != nullptr ? why : "not loadable");
    }
    if (module == nullptr) {
      failure = "cannot load foldtron's sentencepiece plugin; tried:" + tried;
      return;
    }
    const auto symbol = [&](const char* name) {
      void* address = ::dlsym(module, name);
      if (address == nullptr) failure = fmt::format("the sentencepiece plugin lacks '{}'", name);
      return address;
    };
    api.load = reinterpret_cast<decltype(api.load)>(symbol("ft_spm_load"));
    api.free_model = reinterpret_cast<decltype(api.free_model)>(symbol("ft_spm_free"));
    api.free_buffer = reinterpret_cast<decltype(api.free_buffer)>(symbol("ft_spm_free_buffer"));
    api.encode = reinterpret_cast<decltype(api.encode)>(symbol("ft_spm_encode"));
    api.encode_pieces = reinterpret_cast<decltype(api.encode_pieces)>(symbol("ft_spm_encode_pieces"));
    api.decode = reinterpret_cast<decltype(api.decode)>(symbol("ft_spm_decode"));
    api.size = reinterpret_cast<decltype(api.size)>(symbol("ft_spm_size"));
    api.piece_id = reinterpret_cast<decltype(api.piece_id)>(symbol("ft_spm_piece_id"));
    api.piece = reinterpret_cast<decltype(api.piece)>(symbol("ft_spm_piece"));
    api.special = reinterpret_cast<decltype(api.special)>(symbol("ft_spm_special"));
  });
  if (!failure.empty()) {
    throw DataError(failure, fmt::format("build foldtron with scripts/build.sh (it puts {} beside bin/foldtron), or "
                                         "point FOLDTRON_SPM_PLUGIN at it",
                                         FOLDTRON_SPM_PLUGIN_NAME));
  }
  return api;
}

// The plugin's error message, freed.
std::string take_error(char* error) {
  std::string text = error != nullptr ? error : "unknown error";
  if (error != nullptr) spm().free_buffer(error);
  return text;
}

// The first trainer program that exists (beside_foldtron).
std::string trainer_program() {
  std::string tried;
  for (const std::string& path : beside_foldtron("FOLDTRON_SPM_TRAIN", FOLDTRON_SPM_TRAIN_NAME, FOLDTRON_SPM_TRAIN_BUILT)) {
    if (::access(path.c_str(), X_OK) == 0) return path;
    tried += "\n  " + path;
  }
  throw DataError(fmt::format("cannot find foldtron's tokenizer trainer; tried:{}", tried),
                  "this build has it only where CMake found libsentencepiece_train (Debian package "
                  "libsentencepiece-dev): install it and rebuild with scripts/build.sh, or point FOLDTRON_SPM_TRAIN "
                  "at a foldtron_spm_train");
}

// Runs the trainer; its progress goes to our stderr. DataError when it fails.
void run_trainer(const std::string& program, std::vector<std::string> argv, const std::string& prefix) {
  std::vector<char*> raw;
  for (std::string& arg : argv) raw.push_back(arg.data());
  raw.push_back(nullptr);
  pid_t child = 0;
  if (const int rc = ::posix_spawn(&child, program.c_str(), nullptr, nullptr, raw.data(), environ); rc != 0) {
    throw DataError(fmt::format("cannot run '{}': {}", program, std::strerror(rc)), "check that it is executable");
  }
  int status = 0;
  pid_t waited = 0;
  while ((waited = ::waitpid(child, &status, 0)) < 0 && errno == EINTR) {
  }
  if (waited < 0) {
    throw DataError(fmt::format("lost the tokenizer trainer '{}': {}", program, std::strerror(errno)),
                    "run foldtron tokenizer train again");
  }
  if (WIFSIGNALED(status)) {
    throw DataError(fmt::format("sentencepiece's trainer for '{}' was killed by signal {}", prefix, WTERMSIG(status)),
                    "a large corpus may need more memory: sample it with --input-sentence-size N");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw DataError(fmt::format("sentencepiece could not train '{}' (exit code {}; its message is above)", prefix,
                                WEXITSTATUS(status)),
                    "the message names the cause; a vocabulary larger than the text allows needs a smaller "
                    "--vocab-size (or more text)");
  }
}

DataError bad_id(int64_t id, int64_t vocab, const std::string& what) {
  return DataError(fmt::format("token id {} is outside the vocabulary of {} ({} ids)", id, what, vocab),
                   "decode ids made by the same tokenizer");
}

}  // namespace

std::vector<int64_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id > 255) throw bad_id(id, 256, "the byte tokenizer");
    text.push_back(static_cast<char>(id));
  }
  return text;
}

int64_t ByteTokenizer::piece_id(const std::string& piece) const {
  return piece.size() == 1 ? static_cast<unsigned char>(piece[0]) : -1;
}

std::string ByteTokenizer::piece(int64_t id) const {
  if (id < 0 || id > 255) throw bad_id(id, 256, "the byte tokenizer");
  return std::string(1, static_cast<char>(id));
}

struct SentencePieceTokenizer::Impl {
  void* model = nullptr;
  ~Impl() {
    if (model != nullptr) spm().free_model(model);
  }
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path) : impl_(std::make_unique<Impl>()), path_(path) {
  if (fs::is_directory(path_)) path_ = (fs::path(path_) / "tokenizer.model").string();
  if (!fs::is_regular_file(path_)) {
    throw DataError(fmt::format("no sentencepiece model at '{}'", path_),
                    "train one with foldtron tokenizer train, or point at a Hugging Face model directory that has "
                    "a tokenizer.model");
  }
  char* error = nullptr;
  impl_->model = spm().load(path_.c_str(), &error);
  if (impl_->model == nullptr) {
    throw DataError(fmt::format("'{}' is not a sentencepiece model: {}", path_, take_error(error)),
                    "pass the .model file foldtron tokenizer train (or spm_train) wrote, not the .vocab");
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

namespace {

// One plugin call that fills a malloc'ed buffer of `length` elements: its contents, the buffer
// freed. DataError ("`what`: the plugin's message", `hint`) when the call fails.
template <typename T, typename Call>
std::vector<T> plugin_buffer(const Call& call, const std::string& what, const char* hint) {
  T* buffer = nullptr;
  size_t length = 0;
  char* error = nullptr;
  if (call(&buffer, &length, &error) != 0) throw DataError(fmt::format("{}: {}", what, take_error(error)), hint);
  std::vector<T> out(buffer, buffer + length);
  spm().free_buffer(buffer);
  return out;
}

constexpr const char* kEncodeHint = "pass UTF-8 text; the model file may be damaged (train it again)";

}  // namespace

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  const std::vector<int> ids = plugin_buffer<int>(
      [&](int** out, size_t* count, char** error) {
        return spm().encode(impl_->model, text.data(), text.size(), out, count, error);
      },
      fmt::format("cannot encode with '{}'", path_), kEncodeHint);
  return {ids.begin(), ids.end()};
}

std::vector<std::string> SentencePieceTokenizer::encode_pieces(const std::string& text) const {
  const std::vector<char> joined = plugin_buffer<char>(  // each piece followed by '\0'
      [&](char** out, size_t* length, char** error) {
        return spm().encode_pieces(impl_->model, text.data(), text.size(), out, length, error);
      },
      fmt::format("cannot encode with '{}'", path_), kEncodeHint);
  std::vector<std::string> pieces;
  for (auto at = joined.begin(); at != joined.end();) {
    const auto end = std::find(at, joined.end(), '\0');
    pieces.emplace_back(at, end);
    at = end == joined.end() ? end : end + 1;
  }
  return pieces;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> narrow;
  narrow.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) throw bad_id(id, vocab_size(), "'" + path_ + "'");
    narrow.push_back(static_cast<int>(id));
  }
  const std::vector<char> text = plugin_buffer<char>(
      [&](char** out, size_t* length, char** error) {
        return spm().decode(impl_->model, narrow.data(), narrow.size(), out, length, error);
      },
      fmt::format("cannot decode with '{}'", path_), "decode ids made by the same tokenizer");
  return {text.begin(), text.end()};
}

int64_t SentencePieceTokenizer::vocab_size() const { return spm().size(impl_->model); }

int64_t SentencePieceTokenizer::piece_id(const std::string& piece) const {
  return spm().piece_id(impl_->model, piece.c_str());
}

std::string SentencePieceTokenizer::piece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) throw bad_id(id, vocab_size(), "'" + path_ + "'");
  char* text = spm().piece(impl_->model, static_cast<int>(id));
  if (text == nullptr) throw DataError(fmt::format("out of memory reading piece {} of '{}'", id, path_));
  std::string out = text;
  spm().free_buffer(text);
  return out;
}

int64_t SentencePieceTokenizer::unk_id() const { return spm().special(impl_->model, 0); }
int64_t SentencePieceTokenizer::bos_id() const { return spm().special(impl_->model, 1); }
int64_t SentencePieceTokenizer::eos_id() const { return spm().special(impl_->model, 2); }
int64_t SentencePieceTokenizer::pad_id() const { return spm().special(impl_->model, 3); }

std::string SentencePieceTokenizer::describe() const {
  return fmt::format("sentencepiece '{}' ({} ids; unk {}, bos {}, eos {}, pad {})", path_, vocab_size(), unk_id(),
                     bos_id(), eos_id(), pad_id());
}

void train_sentencepiece(const SentencePieceTrainOptions& o) {
  if (o.inputs.empty()) throw DataError("no input files to train a tokenizer on", "pass --input FILE...");
  for (const std::string& input : o.inputs) {
    if (!fs::is_regular_file(input)) {
      throw DataError(fmt::format("tokenizer input '{}' is not a readable file", input),
                      "pass text files, one sentence or document per line");
    }
  }
  if (o.model_type != "bpe" && o.model_type != "unigram") {
    throw DataError(fmt::format("model type '{}' is not bpe or unigram", o.model_type), "use --model-type bpe|unigram");
  }
  for (const std::string& symbol : o.user_defined_symbols) {
    if (symbol.empty() || symbol.find(',') != std::string::npos) {
      throw DataError(fmt::format("user-defined symbol '{}' is empty or holds a comma", symbol),
                      "name each symbol once, e.g. --user-defined-symbols '<2en>' '<2de>'");
    }
  }
  if (!o.model_prefix.empty() && fs::path(o.model_prefix).has_parent_path()) {
    fs::create_directories(fs::path(o.model_prefix).parent_path());
  }
  const int64_t threads = o.threads > 0 ? o.threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  std::string inputs;
  for (const std::string& input : o.inputs) inputs += (inputs.empty() ? "" : ",") + input;
  std::vector<std::string> argv{"foldtron_spm_train",
                                "--input=" + inputs,
                                "--model_prefix=" + o.model_prefix,
                                "--vocab_size=" + std::to_string(o.vocab_size),
                                "--model_type=" + o.model_type,
                                fmt::format("--character_coverage={}", o.character_coverage),
                                "--num_threads=" + std::to_string(threads),
                                std::string("--byte_fallback=") + (o.byte_fallback ? "true" : "false"),
                                "--normalization_rule_name=" + o.normalization,
                                "--unk_id=0",
                                "--bos_id=1",
                                "--eos_id=2",
                                "--pad_id=3",
                                "--input_sentence_size=" + std::to_string(o.input_sentence_size),
                                "--shuffle_input_sentence=true",
                                "--seed=" + std::to_string(o.seed)};
  if (!o.user_defined_symbols.empty()) {
    argv.push_back(fmt::format("--user_defined_symbols={}", fmt::join(o.user_defined_symbols, ",")));
  }
  run_trainer(trainer_program(), argv, o.model_prefix);
}

std::unique_ptr<TextTokenizer> make_tokenizer(const DataConfig& data) {
  if (data.tokenizer == Tokenizer::kSentencePiece) return std::make_unique<SentencePieceTokenizer>(data.tokenizer_model);
  return std::make_unique<ByteTokenizer>();
}

std::vector<int64_t> check_special_tokens(const DataConfig& data, const TextTokenizer& tokenizer, int64_t vocab_size) {
  std::vector<ConfigProblem> problems;
  const auto too_large = [&](const std::string& what, int64_t id) {
    return fmt::format("{} has id {}, past model.vocab_size {} ({})", what, id, vocab_size, tokenizer.describe());
  };
  if (tokenizer.vocab_size() > vocab_size) {
    problems.push_back({"model.vocab_size",
                        fmt::format("{} is smaller than the vocabulary of {}", vocab_size, tokenizer.describe()),
                        fmt::format("set model.vocab_size to at least {}", tokenizer.vocab_size())});
  }
  const std::pair<const char*, int64_t> own[] = {{"<unk>", tokenizer.unk_id()},
                                                 {"BOS", tokenizer.bos_id()},
                                                 {"EOS", tokenizer.eos_id()},
                                                 {"padding", tokenizer.pad_id()}};
  for (const auto& [name, id] : own) {
    if (id >= vocab_size) {
      problems.push_back({"model.vocab_size", too_large(fmt::format("the tokenizer's {} token", name), id),
                          fmt::format("set model.vocab_size to at least {}", tokenizer.vocab_size())});
    }
  }
  std::vector<int64_t> ids;
  std::istringstream in(data.required_tokens);
  for (std::string piece; in >> piece;) {
    const int64_t id = tokenizer.piece_id(piece);
    if (id < 0) {
      problems.push_back({"data.required_tokens",
                          fmt::format("'{}' is not a token of {}", piece, tokenizer.describe()),
                          "train the tokenizer with it as a user-defined symbol (foldtron tokenizer train "
                          "--user-defined-symbols), or remove it from data.required_tokens"});
    } else if (id >= vocab_size) {
      problems.push_back({"data.required_tokens", too_large(fmt::format("'{}'", piece), id),
                          fmt::format("set model.vocab_size to at least {}", tokenizer.vocab_size())});
    }
    ids.push_back(id);
  }
  if (!problems.empty()) throw ConfigError(std::move(problems));
  return ids;
}

}  // namespace foldtron
