// MPI lifetime and the job-wide error policy (see mpi_runtime.h).
#include "parallel/mpi_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <fmt/format.h>

#include "core/errors.h"
#include "core/fault.h"
#include "core/log.h"

namespace foldtron {
namespace {

constexpr int kExitUserError = 2;
constexpr int kExitInternalError = 1;

int world_rank_or_zero() {
  int rank = 0;
  if (mpi_active()) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size_or_one() {
  int size = 1;
  if (mpi_active()) MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

}  // namespace

void mpi_check(int code, const char* operation, const std::string& group) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw CommError(fmt::format("MPI {} on group '{}' failed on world rank {}: {}", operation, group,
                              world_rank_or_zero(), std::string(text, static_cast<size_t>(length))),
                  "check that every rank runs the same sequence of collectives with matching sizes");
}

bool mpi_active() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_);
    owns_ = true;
  } else {
    MPI_Query_thread(&thread_level_);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  log::set_rank(rank_);
  install_signal_report(rank_);
  try {
    arm_faults(rank_);
  } catch (const UsageError&) {
    if (owns_) MPI_Finalize();  // every rank reads the same variable and ends alike
    throw;
  }
  // SERIALIZED: on GPUs autograd's device thread makes MPI calls (gradient buckets and NCCL set-up
  // in backward hooks, host exchanges of recomputed MoE layers) while the main thread waits.
  if (thread_level_ < MPI_THREAD_SERIALIZED) {
    throw CommError(fmt::format("the MPI library gives thread level {}; foldtron needs MPI_THREAD_SERIALIZED or more",
                                thread_level_),
                    "use an MPI built with thread support (OpenMPI 4 is)");
  }
}

MpiRuntime::~MpiRuntime() {
  if (owns_ && mpi_active()) MPI_Finalize();
}

void abort_job(const std::string& message, int code) {
  const int rank = world_rank_or_zero();
  const int size = world_size_or_one();
  std::fprintf(stderr, "%s", (size > 1 ? fmt::format("[rank {}] {}", rank, message) : message).c_str());
  std::fflush(stderr);
  if (size > 1) {
    std::fprintf(stderr, "[rank %d] aborting all %d ranks\n", rank, size);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  std::exit(code);
}

int run_guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& error) {
    std::string message = fmt::format("foldtron: {}: {}\n", error.kind(), error.what());
    if (!error.hint().empty()) message += fmt::format("  hint: {}\n", error.hint());
    const int code = error.user_error() ? kExitUserError : kExitInternalError;
    if (world_size_or_one() > 1) abort_job(message, code);
    std::cerr << message;
    return code;
  } catch (const std::exception& error) {
    const std::string message = fmt::format("foldtron: internal error: {}\n", error.what());
    if (world_size_or_one() > 1) abort_job(message, kExitInternalError);
    std::cerr << message;
    return kExitInternalError;
  }
}

}  // namespace foldtron
