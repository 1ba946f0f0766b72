// What a rank is doing, for the message a failed job leaves, and faults injected on purpose, for
// the reliability tests (docs/reliability.md).
//
// Report: a rank records its activity ("step 12", "saving the checkpoint of step 10") and, while it
// waits for a collective, the operation and group. When a termination signal comes (the launcher
// ending the job because another rank died, or a scheduler's preemption) the rank writes one line
// naming them to stderr, so the log of a dead job says where every survivor stood:
//   foldtron: world rank 0 got SIGTERM in step 13, waiting 0.84 s in all_to_all on group 'ep'
// A crash (SIGSEGV, SIGBUS, SIGFPE, SIGILL) writes the same line, the fault address and the stack.
//
// Injection: the environment variable FOLDTRON_FAULT="ACTION@POINT#N" or "ACTION@POINT#N/RANK"
// makes world rank RANK (every rank without it) take ACTION the N-th time (from 1) it reaches POINT:
//   kill    SIGKILL itself (a crashed process or node)
//   stop    SIGSTOP itself (a hung process)
//   enospc  the operation fails as a full disk would make it fail (file_write, checkpoint_write)
//   eio     the operation fails with an I/O error, as a failing disk would make it fail (remove)
//   nan     the value becomes NaN (loss only)
// Points: each MPI operation by name (all_reduce, broadcast, all_gather, reduce_scatter, all_to_all,
// batch_p2p, barrier) as it is posted; checkpoint_write (each write into a safetensors file: a
// checkpoint's tensors) and file_write (each write of any other AtomicFile: checkpoint metadata,
// `latest`, dataset caches); remove (each remove_tree: a crashed save's leftovers, checkpoints
// beyond keep_last, an export's temporary folder); loss (each training micro-batch's loss on a last pipeline stage,
// before backward, so NaN reaches every gradient). Unset, reaching a point costs one atomic load.
#pragma once

#include <string>

namespace foldtron {

// Reads FOLDTRON_FAULT now, for world rank `rank` (MPI's; -1: as the launcher's environment says):
// UsageError naming it when it is malformed (else the first point would).
void arm_faults(int rank);
// Replaces the injected fault (the same syntax; "" for none) and restarts its count: for tests in
// one process. UsageError when malformed.
void set_fault(const std::string& spec);

// Counts a visit of `point`; kills or stops this process when the injected fault falls here.
// Returns true when the operation must fail (enospc, eio) or its value become NaN (nan).
bool fault_at(const char* point);

// The rank's current activity, reported with a termination signal; short text (159 bytes kept).
void set_activity(const std::string& text);

// Marks this rank as waiting in `operation` on `group` until destroyed.
class WaitScope {
 public:
  WaitScope(const char* operation, const std::string& group);
  ~WaitScope();
  WaitScope(const WaitScope&) = delete;
  WaitScope& operator=(const WaitScope&) = delete;
};

// Writes the report line for `signal` to stderr (async-signal-safe: for signal handlers).
void report_signal(int signal);

// From now on SIGTERM writes the report line and then ends the process as it would have
// (handlers installed later, like the trainer's stop handler, call report_signal themselves);
// a crash (SIGSEGV, SIGBUS, SIGFPE, SIGILL) writes it with the fault address and the stack, then
// ends the process by the same signal (not in sanitizer builds, whose runtimes report crashes).
// `world_rank` names this process in the lines.
void install_signal_report(int world_rank);

// Whether install_signal_report handles crashes in this build (not in sanitizer builds).
bool reports_crashes();

}  // namespace foldtron
