// Activity reports on termination signals and injected faults (see fault.h).
#include "core/fault.h"

#include <signal.h>
#include <time.h>
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
                                   "batch_p2p",  "barrier",   "file_write", "checkpoint_write", "loss"};

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
  static const std::regex form(R"(^(kill|stop|enospc|nan)@([a-z_0-9]+)#([1-9][0-9]{0,17})(/([0-9]{1,9}))?$)");
  std::smatch match;
  const bool known_point = std::regex_match(text, match, form) &&
                           std::find(std::begin(kPoints), std::end(kPoints), match[2].str()) != std::end(kPoints);
  const bool writes = match[2] == "file_write" || match[2] == "checkpoint_write";
  const bool fits = known_point && (match[1] != "enospc" || writes) && (match[1] != "nan" || match[2] == "loss");
  if (!fits) {
    throw UsageError(fmt::format("FOLDTRON_FAULT='{}' is not a fault this build can inject", text),
                     "write ACTION@POINT#N or ACTION@POINT#N/RANK: ACTION kill, stop, enospc (at file_write or "
                     "checkpoint_write) or nan (at loss); POINT all_reduce, broadcast, all_gather, reduce_scatter, "
                     "all_to_all, batch_p2p, barrier, file_write, checkpoint_write or loss (docs/reliability.md); unset "
                     "it to train normally");
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
  return fault.action == "enospc" || fault.action == "nan";
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
  if (signal == SIGTERM) {
    line.add("SIGTERM");
  } else if (signal == SIGINT) {
    line.add("SIGINT");
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
  const ssize_t ignored = ::write(STDERR_FILENO, line.data, line.size);
  (void)ignored;
}

void install_signal_report(int world_rank) {
  report_rank = world_rank;
  struct sigaction action {};
  action.sa_handler = report_and_end;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);
}

}  // namespace foldtron
