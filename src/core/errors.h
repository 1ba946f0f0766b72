// Typed errors. A user mistake (bad config, data file, checkpoint, flag, communication failure)
// throws one of the Error subclasses with a message that names the field and value and a hint
// that says what would be valid; `main` prints both and exits 2. A bug in foldtron throws
// InternalError through FT_CHECK and exits 1. Never `assert()` on input.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace foldtron {

class Error : public std::runtime_error {
 public:
  Error(const std::string& message, std::string hint)
      : std::runtime_error(message), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }
  // Short name printed before the message, e.g. "config error".
  virtual const char* kind() const = 0;
  // User errors exit with code 2, internal errors with 1.
  virtual bool user_error() const { return true; }

 private:
  std::string hint_;
};

// One problem found in a config; validation collects all of them before throwing.
struct ConfigProblem {
  std::string field;    // "parallel.tp", or "" for problems spanning fields
  std::string message;  // names the value and the constraint
  std::string hint;     // what would be valid
};

class ConfigError : public Error {
 public:
  explicit ConfigError(std::vector<ConfigProblem> problems);
  ConfigError(const std::string& field, const std::string& message, const std::string& hint)
      : ConfigError(std::vector<ConfigProblem>{{field, message, hint}}) {}
  const std::vector<ConfigProblem>& problems() const { return problems_; }
  const char* kind() const override { return "config error"; }

 private:
  std::vector<ConfigProblem> problems_;
};

#define FOLDTRON_SIMPLE_ERROR(Name, kind_text)                                     \
  class Name : public Error {                                                      \
   public:                                                                         \
    Name(const std::string& message, std::string hint = "")                       \
        : Error(message, std::move(hint)) {}                                       \
    const char* kind() const override { return kind_text; }                        \
  };

FOLDTRON_SIMPLE_ERROR(UsageError, "usage error")           // command-line flags
FOLDTRON_SIMPLE_ERROR(DataError, "data error")             // corpora, token files, inputs
FOLDTRON_SIMPLE_ERROR(CheckpointError, "checkpoint error") // checkpoints, HF model dirs
FOLDTRON_SIMPLE_ERROR(CommError, "communication error")    // MPI / NCCL / CUDA failures
FOLDTRON_SIMPLE_ERROR(IoError, "i/o error")                // files that cannot be read or written
FOLDTRON_SIMPLE_ERROR(TrainingError, "training error")     // a run that cannot go on (diverged)
#undef FOLDTRON_SIMPLE_ERROR

// A broken invariant inside foldtron: a bug, not a user mistake.
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& message)
      : Error(message, "this is a bug in foldtron; please report it with the command line") {}
  const char* kind() const override { return "internal error"; }
  bool user_error() const override { return false; }
};

[[noreturn]] void throw_internal(const char* file, int line, const char* condition,
                                 const std::string& message);

}  // namespace foldtron

// Internal invariant check (not for user input): throws InternalError with file:line.
#define FT_CHECK(cond, message)                                         \
  do {                                                                  \
    if (!(cond)) ::foldtron::throw_internal(__FILE__, __LINE__, #cond, (message)); \
  } while (0)
