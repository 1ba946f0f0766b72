// MPI process lifetime for foldtron programs: MPI_Init_thread / MPI_Finalize, the world rank and
// size, and the error policy of the whole job: when any rank fails, it prints its error and
// aborts every rank (MPI_Abort), so no rank waits forever in a collective.
#pragma once

#include <functional>
#include <string>

#include <mpi.h>

namespace foldtron {

// Checks an MPI return code; on failure throws CommError naming the operation, the group, this
// rank and MPI's message. Communicators are set to MPI_ERRORS_RETURN so codes come back.
void mpi_check(int code, const char* operation, const std::string& group);

class MpiRuntime {
 public:
  // Initializes MPI (thread level MPI_THREAD_MULTIPLE requested, FUNNELED required) unless it
  // already is, and makes world errors return codes.
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int thread_level() const { return thread_level_; }

 private:
  int rank_ = 0;
  int size_ = 1;
  int thread_level_ = 0;
  bool owns_ = false;
};

// Whether MPI is initialized and not yet finalized.
bool mpi_active();

// Runs `body` and turns exceptions into the job's exit: the error (with its hint) goes to stderr
// prefixed with this rank; user errors give exit code 2, internal ones 1. With more than one rank
// the whole job is ended with MPI_Abort, since the other ranks may be waiting on this one.
int run_guarded(const std::function<int()>& body);

// Prints one error and, under MPI with several ranks, aborts the job with `code`.
[[noreturn]] void abort_job(const std::string& message, int code);

}  // namespace foldtron
