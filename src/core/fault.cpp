// Activity reports on termination and crash signals, and injected faults (see fault.h).
#include "core/fault.h"

#include <execinfo.h>
#include <signal.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <regex>

#include <fmt/format.h>

#include "core/errors.h"

namespace foldtron {
namespace {

// ---- injection ----

struct Fault {
  std::string action, point;
  int64_t nth = 0;
  int rank = -1;  // -1: every rank
};

constexpr const char* kPoints[] = {"all_reduce", "broadcast", "all_gather", "reduce_scatter", "all_to_all",
                                   "batch_p2p",  "barrier",   "file_write", "checkpoint_write", "loss",
                                   "remove"};

std::once_flag fault_once;
std::atomic<int> fault_armed{-1};  // -1: not read yet, 0: none, 1: armed
Fault fault;
std::atomic<int64_t> fault_visits{0};

std::atomic<int> world_rank{-1};  // as MPI tells it (arm_faults); -1: not known yet

// This process's world rank: MPI's, else as the launcher tells it (OpenMPI, PMIx, MPICH, Slurm);
// 0 alone.
int this_rank() {
  if (world_rank.load() >= 0) return world_rank.load();
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return 0;
}

void parse_fault(const std::string& text) {
  fault_armed.store(0);
  fault_visits.store(0);
  if (text.empty()) return;
  static const std::regex form(R"(^(kill|stop|enospc|eio|nan)@([a-z_0-9]+)#([1-9][0-9]{0,17})(/([0-9]{1,9}))?$)");
  std::smatch match;
  const bool known_point = std::regex_match(text, match, form) &&
                           std::find(std::begin(kPoints), std::end(kPoints), match[2].str()) != std::end(kPoints);
  const bool writes = match[2] == "file_write" || match[2] == "checkpoint_write";
  const bool fits = known_point && (match[1] != "enospc" || writes) && (match[1] != "eio" || match[2] == "remove") &&
                    (match[1] != "nan" || match[2] == "loss");
  if (!fits) {
    throw UsageError(fmt::format("FOLDTRON_FAULT='{}' is not a fault this build can inject", text),
                     "write ACTION@POINT#N or ACTION@POINT#N/RANK: ACTION kill, stop, enospc (at file_write or "
                     "checkpoint_write), eio (at remove) or nan (at loss); POINT all_reduce, broadcast, all_gather, "
                     "reduce_scatter, all_to_all, batch_p2p, barrier, file_write, checkpoint_write, remove or loss "
                     "(docs/reliability.md); unset it to train normally");
  }
  fault = {match[1].str(), match[2].str(), std::stoll(match[3].str()), match[5].matched ? std::stoi(match[5].str()) : -1};
  fault_armed.store(fault.rank < 0 || fault.rank == this_rank() ? 1 : 0);
}

void read_fault() {
  const char* text = std::getenv("FOLDTRON_FAULT");
  parse_fault(text == nullptr ? std::string() : std::string(text));
}

// ---- report ----

static_assert(std::atomic<int64_t>::is_always_lock_free, "the signal handler reads atomics");
constexpr size_t kText = 160;
char activity_text[2][kText] = {{0}, {0}};
std::atomic<int> activity_slot{0};
char wait_text[2][kText] = {{0}, {0}};
std::atomic<int> wait_slot{0};
std::atomic<int64_t> wait_since_ns{0};  // 0: not waiting
int report_rank = 0;

int64_t monotonic_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
}

void store_text(char (&slots)[2][kText], std::atomic<int>& slot, const std::string& text) {
  const int next = 1 - slot.load();
  const size_t n = std::min(text.size(), kText - 1);
  std::memcpy(slots[next], text.data(), n);
  slots[next][n] = '\0';
  slot.store(next);
}

// Appends to a fixed buffer without allocating (for signal handlers).
struct Line {
  char data[512];
  size_t size = 0;
  void add(const char* text) {
    while (*text != '\0' && size + 1 < sizeof(data)) data[size++] = *text++;
  }
  void add_hex(uint64_t value) {
    add("0x");
    char digits[16];
    int n = 0;
    do {
      digits[n++] = "0123456789abcdef"[value % 16];
      value /= 16;
    } while (value > 0);
    while (n > 0 && size + 1 < sizeof(data)) data[size++] = digits[--n];
  }
  void add(int64_t value) {
    char digits[24];
    int n = 0;
    const bool negative = value < 0;
    uint64_t v = negative ? static_cast<uint64_t>(-(value + 1)) + 1 : static_cast<uint64_t>(value);
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v > 0);
    if (negative) add("-");
    while (n > 0 && size + 1 < sizeof(data)) data[size++] = digits[--n];
  }
};

void report_and_end(int signal) {
  report_signal(signal);
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

constexpr int kCrashSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};

// The sanitizer runtimes report crashes better (and own these signals): no handler of ours there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

void write_line(const Line& line) {
  const ssize_t written = ::write(STDERR_FILENO, line.data, line.size);
  (void)written;
}

// A crash: the report line, the fault address and this thread's stack (one `MODULE(+OFFSET)` line
// per frame; `addr2line -C -f -e MODULE OFFSET` names foldtron's), then the default action, so
// the launcher sees the signal as before. Installed with SA_RESETHAND, so a fault inside the
// report ends the process at once. backtrace() and backtrace_symbols_fd() are not
// async-signal-safe (the unwinder and dladdr take locks): an alarm ends a report that blocks.
void report_crash(int signal, siginfo_t* info, void* context) {
  ::alarm(10);
  report_signal(signal);
  Line address;
  address.add("foldtron: world rank ");
  address.add(report_rank);
  address.add(": fault address ");
  address.add_hex(reinterpret_cast<uintptr_t>(info->si_addr));
  address.add("\n");
  write_line(address);
#if defined(__x86_64__) && defined(__linux__)
  // A program counter of 0 (usually a call through a null function pointer) stops the unwinder
  // at once; the return address on top of the stack then names the caller.
  const auto* registers = static_cast<const ucontext_t*>(context)->uc_mcontext.gregs;
  if (registers[REG_RIP] == 0) {
    Line null_call;
    null_call.add("foldtron: program counter 0 (a call through a null function pointer?), from:\n");
    write_line(null_call);
    void* caller = *reinterpret_cast<void* const*>(registers[REG_RSP]);
    ::backtrace_symbols_fd(&caller, 1, STDERR_FILENO);
  }
#else
  (void)context;
#endif
  Line stack;
  stack.add("foldtron: stack:\n");
  write_line(stack);
  void* frames[64];
  ::backtrace_symbols_fd(frames, ::backtrace(frames, 64), STDERR_FILENO);
  ::raise(signal);  // the default action again (SA_RESETHAND)
}

}  // namespace

void arm_faults(int rank) {
  if (rank >= 0) world_rank.store(rank);
  if (fault_armed.load() < 0) std::call_once(fault_once, read_fault);
}

void set_fault(const std::string& spec) {
  std::call_once(fault_once, [] {});  // the environment no longer counts
  parse_fault(spec);
}

bool fault_at(const char* point) {
  int armed = fault_armed.load();
  if (armed < 0) {
    arm_faults(-1);
    armed = fault_armed.load();
  }
  if (armed == 0) return false;
  if (fault.point != point || fault_visits.fetch_add(1) + 1 != fault.nth) return false;
  if (fault.action == "kill") ::raise(SIGKILL);
  if (fault.action == "stop") ::raise(SIGSTOP);
  return fault.action == "enospc" || fault.action == "eio" || fault.action == "nan";
}

void set_activity(const std::string& text) { store_text(activity_text, activity_slot, text); }

WaitScope::WaitScope(const char* operation, const std::string& group) {
  store_text(wait_text, wait_slot, fmt::format("{} on group '{}'", operation, group));
  wait_since_ns.store(monotonic_ns());
}

WaitScope::~WaitScope() { wait_since_ns.store(0); }

void report_signal(int signal) {
  Line line;
  line.add("foldtron: world rank ");
  line.add(report_rank);
  line.add(" got ");
  const char* name = signal == SIGTERM   ? "SIGTERM"
                     : signal == SIGINT  ? "SIGINT"
                     : signal == SIGSEGV ? "SIGSEGV"
                     : signal == SIGBUS  ? "SIGBUS"
                     : signal == SIGFPE  ? "SIGFPE"
                     : signal == SIGILL  ? "SIGILL"
                                         : nullptr;
  if (name != nullptr) {
    line.add(name);
  } else {
    line.add("signal ");
    line.add(signal);
  }
  const char* activity = activity_text[activity_slot.load()];
  if (*activity != '\0') {
    line.add(" in ");
    line.add(activity);
  }
  const int64_t since = wait_since_ns.load();
  if (since != 0) {
    const int64_t centis = (monotonic_ns() - since) / 10000000;
    line.add(", waiting ");
    line.add(centis / 100);
    line.add(centis % 100 < 10 ? ".0" : ".");
    line.add(centis % 100);
    line.add(" s in ");
    line.add(wait_text[wait_slot.load()]);
  }
  line.add("\n");
  write_line(line);
}

void install_signal_report(int world_rank) {
  report_rank = world_rank;
  struct sigaction action {};
  action.sa_handler = report_and_end;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);
  if (!reports_crashes()) return;
  // Crashes too (replacing MPI's own report, which prints no frame past a null call), on a stack of
  // their own for this thread, so a stack overflow is reported as well.
  void* warm_up[1];
  (void)::backtrace(warm_up, 1);  // loads the unwinder now, not inside the handler
  static char crash_stack[1 << 16];
  stack_t alternate{};
  alternate.ss_sp = crash_stack;
  alternate.ss_size = sizeof(crash_stack);
  ::sigaltstack(&alternate, nullptr);
  struct sigaction crash {};
  crash.sa_sigaction = report_crash;
  crash.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
  sigemptyset(&crash.sa_mask);
  sigaddset(&crash.sa_mask, SIGTERM);  // the crash, not a launcher's SIGTERM, ends the process
  for (int signal : kCrashSignals) sigaddset(&crash.sa_mask, signal);
  for (int signal : kCrashSignals) ::sigaction(signal, &crash, nullptr);
}

bool reports_crashes() { return !kSanitized; }

}  // namespace foldtron
