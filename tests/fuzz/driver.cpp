// A mutation loop for the fuzz targets where libFuzzer is not used (the gcc build, CI's short
// run): every input of the seed corpus, then mutants of them (bit flips, interesting bytes and
// integers, inserted, erased, duplicated and spliced ranges, numbers in text made huge or
// negative), stacked 1-4 deep, until the time or run budget is spent. It has no coverage feedback:
// scripts/fuzz.sh runs the same targets under libFuzzer with sanitizers for that. Flags follow
// libFuzzer's: -max_total_time=S -runs=N -seed=K -max_len=L -timeout=T -artifact_prefix=P, then
// corpus folders or files. A crash or an uncaught exception writes the input to Pcrash-input and
// ends the process by the signal; an input running over T seconds (20) goes to Ptimeout-input.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// The input being run, for the crash handler.
const uint8_t* current_data = nullptr;
size_t current_size = 0;
char crash_path[4096] = "crash-input";

char timeout_path[4096] = "timeout-input";

void save_input(const char* path) {
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t done = 0;
    while (current_data != nullptr && done < current_size) {
      const ssize_t n = ::write(fd, current_data + done, current_size - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  }
}

void say(const char* text) {
  const ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

void on_crash(int signal) {
  save_input(crash_path);
  say("fuzz: crash; the input is in the artifact file (crash-input)\n");
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

// One input ran longer than -timeout seconds: a hang is a finding too.
void on_timeout(int /*signal*/) {
  save_input(timeout_path);
  say("fuzz: an input ran past the timeout; it is in the artifact file (timeout-input)\n");
  ::_exit(70);
}

class Mutator {
 public:
  Mutator(uint64_t seed, const std::vector<Bytes>& corpus, size_t max_len)
      : rng_(seed), corpus_(corpus), max_len_(max_len) {}

  Bytes next() {
    Bytes b = corpus_[pick(corpus_.size())];
    const int depth = 1 + static_cast<int>(pick(4));
    for (int i = 0; i < depth; ++i) mutate(b);
    if (b.size() > max_len_) b.resize(max_len_);
    return b;
  }

 private:
  size_t pick(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  void put_integer(Bytes& b) {
    static const uint64_t values[] = {0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff,
                                      0x100000000ull, 0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull};
    uint64_t v = values[pick(std::size(values))];
    if (pick(4) == 0) v = b.size() + pick(16);  // just past the end
    const size_t width = pick(2) == 0 ? 4 : 8;
    if (b.size() < width) return;
    const size_t at = pick(b.size() - width + 1);
    for (size_t i = 0; i < width; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
  }

  // A decimal number of a text input made huge, negative or zero.
  void put_number(Bytes& b) {
    std::vector<size_t> starts;
    for (size_t i = 0; i < b.size(); ++i) {
      if (b[i] >= '0' && b[i] <= '9' && (i == 0 || b[i - 1] < '0' || b[i - 1] > '9')) starts.push_back(i);
    }
    if (starts.empty()) return;
    const size_t at = starts[pick(starts.size())];
    size_t end = at;
    while (end < b.size() && b[end] >= '0' && b[end] <= '9') ++end;
    static const char* numbers[] = {"0", "-1", "4294967296", "9223372036854775807", "18446744073709551616",
                                    "99999999999999999999999", "1e308", "1e400", "-9223372036854775808", "65536"};
    const std::string n = numbers[pick(std::size(numbers))];
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(end));
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), n.begin(), n.end());
  }

  void mutate(Bytes& b) {
    static const uint8_t interesting[] = {0, 1, 0x7f, 0x80, 0xff, '"', '{', '}', '[', ']', ':', ',', '\n', '|', '-', ' '};
    switch (pick(9)) {
      case 0:
        if (!b.empty()) b[pick(b.size())] ^= static_cast<uint8_t>(1u << pick(8));
        break;
      case 1:
        if (!b.empty()) b[pick(b.size())] = interesting[pick(std::size(interesting))];
        break;
      case 2:
        put_integer(b);
        break;
      case 3: {
        const size_t n = 1 + pick(16);
        Bytes extra(n);
        for (auto& x : extra) x = static_cast<uint8_t>(pick(256));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(pick(b.size() + 1)), extra.begin(), extra.end());
        break;
      }
      case 4:
        if (!b.empty()) {
          const size_t at = pick(b.size());
          const size_t n = 1 + pick(std::min<size_t>(b.size() - at, 64));
          b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
        }
        break;
      case 5:
        if (!b.empty()) {
          const size_t at = pick(b.size());
          const size_t n = 1 + pick(std::min<size_t>(b.size() - at, 64));
          Bytes chunk(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(pick(b.size() + 1)), chunk.begin(), chunk.end());
        }
        break;
      case 6:
        b.resize(pick(b.size() + 1));
        break;
      case 7: {
        const Bytes& other = corpus_[pick(corpus_.size())];
        if (other.empty()) break;
        const size_t from = pick(other.size());
        b.resize(pick(b.size() + 1));
        b.insert(b.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
        break;
      }
      default:
        put_number(b);
    }
  }

  std::mt19937_64 rng_;
  const std::vector<Bytes>& corpus_;
  size_t max_len_;
};

Bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

unsigned input_timeout_s = 20;

void run(const Bytes& input) {
  current_data = input.data();
  current_size = input.size();
  ::alarm(input_timeout_s);
  LLVMFuzzerTestOneInput(input.data(), input.size());
  ::alarm(0);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  uint64_t runs = 0, seed = 1;
  size_t max_len = 1 << 16;
  std::string artifact_prefix;
  std::vector<Bytes> corpus;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const size_t n = std::strlen(flag);
      return arg.compare(0, n, flag) == 0 ? arg.c_str() + n : nullptr;
    };
    const char* time_flag = value("-max_total_time=");
    const char* runs_flag = value("-runs=");
    const char* seed_flag = value("-seed=");
    const char* len_flag = value("-max_len=");
    const char* prefix_flag = value("-artifact_prefix=");
    const char* timeout_flag = value("-timeout=");
    if (time_flag != nullptr) {
      seconds = std::stod(time_flag);
    } else if (runs_flag != nullptr) {
      runs = std::stoull(runs_flag);
    } else if (seed_flag != nullptr) {
      seed = std::stoull(seed_flag);
    } else if (len_flag != nullptr) {
      max_len = std::stoull(len_flag);
    } else if (prefix_flag != nullptr) {
      artifact_prefix = prefix_flag;
    } else if (timeout_flag != nullptr) {
      input_timeout_s = static_cast<unsigned>(std::stoul(timeout_flag));
    } else if (!arg.empty() && arg[0] == '-') {
      std::cerr << "fuzz: unknown flag " << arg
                << " (use -max_total_time=S -runs=N -seed=K -max_len=L -timeout=T -artifact_prefix=P)\n";
      return 2;
    } else if (fs::is_directory(arg)) {
      for (const auto& entry : fs::directory_iterator(arg)) {
        if (entry.is_regular_file()) corpus.push_back(read_bytes(entry.path()));
      }
    } else if (fs::is_regular_file(arg)) {
      corpus.push_back(read_bytes(arg));
    } else {
      std::cerr << "fuzz: no corpus at " << arg << "\n";
      return 2;
    }
  }
  if (corpus.empty()) corpus.emplace_back();
  std::snprintf(crash_path, sizeof(crash_path), "%scrash-input", artifact_prefix.c_str());
  std::snprintf(timeout_path, sizeof(timeout_path), "%stimeout-input", artifact_prefix.c_str());
  ::signal(SIGALRM, on_timeout);
  for (int s : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) ::signal(s, on_crash);

  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  uint64_t executions = 0;
  for (const Bytes& input : corpus) {
    run(input);
    ++executions;
  }
  Mutator mutator(seed, corpus, max_len);
  while ((runs == 0 || executions < runs) && (runs > 0 || elapsed() < seconds)) {
    for (int i = 0; i < 64; ++i, ++executions) run(mutator.next());
  }
  const double took = elapsed();
  std::cout << "fuzz: " << executions << " executions in " << took << " s (" << static_cast<uint64_t>(executions / took)
            << "/s) from " << corpus.size() << " seed inputs, seed " << seed << ", 0 crashes\n";
  return 0;
}
