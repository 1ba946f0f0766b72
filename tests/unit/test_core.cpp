// core: error formatting, close-match suggestions, string helpers, divide_exact, logging, folder
// removal and whole-file reading, crash reports.
#include <sys/mman.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "core/errors.h"
#include "core/fault.h"
#include "core/files.h"
#include "core/log.h"
#include "core/math.h"
#include "core/text.h"

namespace foldtron {
namespace {

TEST(Text, EditDistance) {
  EXPECT_EQ(edit_distance("", ""), 0);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3);
  EXPECT_EQ(edit_distance("hidden_size", "hiden_size"), 1);
}

TEST(Text, ClosestMatchAcceptsTyposOnly) {
  const std::vector<std::string> keys{"hidden_size", "num_layers", "vocab_size"};
  EXPECT_EQ(closest_match("hiden_size", keys), "hidden_size");
  EXPECT_EQ(closest_match("num_layer", keys), "num_layers");
  EXPECT_EQ(closest_match("learning_rate", keys), "");
  EXPECT_EQ(suggest("vocab_sise", keys), "did you mean 'vocab_size'?");
  EXPECT_EQ(suggest("zzz", keys), "valid names are: hidden_size, num_layers, vocab_size");
  // Three edits at most, however long the word: a length gap beyond that is no typo.
  EXPECT_EQ(closest_match("hidden_sizes", keys), "hidden_size");
  EXPECT_EQ(closest_match("hidden_size_xy", keys), "hidden_size");
  EXPECT_EQ(closest_match("hidden_size_wxyz", keys), "");
  EXPECT_EQ(closest_match(std::string(1'000'000, 'h'), keys), "");  // a fuzzer's key: skipped, not measured
}

TEST(Text, SplitAndJoin) {
  EXPECT_EQ(split("tp-cp-ep", '-'), (std::vector<std::string>{"tp", "cp", "ep"}));
  EXPECT_EQ(split("", '-'), (std::vector<std::string>{""}));
  EXPECT_EQ(join({"a", "b"}, ", "), "a, b");
}

TEST(Errors, ConfigErrorListsEveryProblem) {
  const ConfigError one("parallel.tp", "must be at least 1, got 0", "use a positive size");
  EXPECT_STREQ(one.what(), "parallel.tp: must be at least 1, got 0");
  EXPECT_EQ(one.hint(), "use a positive size");
  EXPECT_TRUE(one.user_error());
  const ConfigError two({{"model.a", "bad a", "fix a"}, {"model.b", "bad b", "fix b"}});
  const std::string text = two.what();
  EXPECT_NE(text.find("2 problems"), std::string::npos);
  EXPECT_NE(text.find("model.a: bad a"), std::string::npos);
  EXPECT_NE(text.find("hint: fix b"), std::string::npos);
}

TEST(Errors, InternalCheckNamesFileAndCondition) {
  try {
    FT_CHECK(1 + 1 == 3, "arithmetic");
    FAIL() << "FT_CHECK did not throw";
  } catch (const InternalError& e) {
    EXPECT_FALSE(e.user_error());
    EXPECT_NE(std::string(e.what()).find("test_core.cpp"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("1 + 1 == 3"), std::string::npos);
  }
}

TEST(Math, DivideExact) {
  EXPECT_EQ(divide_exact(12, 4), 3);
  EXPECT_THROW(divide_exact(10, 4, "heads"), InternalError);
  EXPECT_EQ(ceil_div(10, 4), 3);
}

TEST(Log, ParseLevel) {
  EXPECT_EQ(log::parse_level("debug"), log::Level::kDebug);
  EXPECT_THROW(log::parse_level("verbose"), UsageError);
}

TEST(Log, OnlyRankZeroPrintsInfo) {
  log::set_level(log::Level::kInfo);
  log::set_rank(3);
  EXPECT_FALSE(log::enabled(log::Level::kInfo));
  EXPECT_TRUE(log::enabled(log::Level::kWarning));
  log::set_all_ranks(true);
  EXPECT_TRUE(log::enabled(log::Level::kInfo));
  EXPECT_FALSE(log::enabled(log::Level::kDebug));
  log::set_all_ranks(false);
  log::set_rank(0);
  EXPECT_TRUE(log::enabled(log::Level::kInfo));
}

}  // namespace
}  // namespace foldtron

// A crash names the rank, the signal and what the rank was doing, gives the fault address and the
// stack past the signal frame, and still ends by the signal (so the launcher reports it as
// before). A null program counter, where unwinding cannot start, is reported with its caller.
// Sanitizer builds keep their runtimes' own crash reports.
namespace {
void (*volatile null_function)() = nullptr;

void crash_by_null_call() {
  foldtron::install_signal_report(3);
  foldtron::set_activity("saving the checkpoint of step 300");
  null_function();
  foldtron::set_activity("");  // not a tail call: the return address stays in this function
}

void crash_by_bad_read() {
  foldtron::install_signal_report(3);
  foldtron::set_activity("step 7");
  // A page nobody may read: a fault without undefined behaviour (UBSan would stop a null read).
  void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  (void)*static_cast<volatile int*>(page);
}
}  // namespace

TEST(CrashReport, NullCallNamesRankActivityAndCaller) {
  if (!foldtron::reports_crashes()) GTEST_SKIP() << "the sanitizer runtime reports crashes in this build";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(crash_by_null_call(), ::testing::KilledBySignal(SIGSEGV),
              "world rank 3 got SIGSEGV in saving the checkpoint of step 300\n.*fault address 0x0\n"
              "foldtron: program counter 0 \\(a call through a null function pointer\\?\\), from:\n"
              "[^\n]*unit_tests[^\n]*\nfoldtron: stack:\n");
}

TEST(CrashReport, BadReadGivesAddressAndTheStackPastTheSignalFrame) {
  if (!foldtron::reports_crashes()) GTEST_SKIP() << "the sanitizer runtime reports crashes in this build";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // After the handler's own frames and libc's signal trampoline, the faulting function's frame (in
  // unit_tests, this binary).
  EXPECT_EXIT(crash_by_bad_read(), ::testing::KilledBySignal(SIGSEGV),
              "world rank 3 got SIGSEGV in step 7\n.*fault address 0x[1-9a-f][0-9a-f]*\nfoldtron: stack:\n"
              ".*libc\\.so[^\n]*\n[^\n]*unit_tests");
}

TEST(Files, ReadWholeFileReadsBytesAndRefusesWhatIsNoRegularFile) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("foldtron_read_whole_" + std::to_string(::getpid()));
  EXPECT_FALSE(foldtron::remove_tree(root.string()));  // a run of an earlier process with this pid
  fs::create_directories(root / "folder");
  const std::string bytes = std::string("model:\n  num_layers: 4\n") + '\0' + "tail\r\n";  // a NUL and a CR survive
  std::ofstream(root / "config.yaml", std::ios::binary) << bytes;
  std::ofstream(root / "empty.yaml");
  fs::create_symlink(root / "config.yaml", root / "link.yaml");

  EXPECT_EQ(foldtron::read_whole_file((root / "config.yaml").string()), bytes);
  EXPECT_EQ(foldtron::read_whole_file((root / "empty.yaml").string()), std::string());  // empty, not absent
  EXPECT_EQ(foldtron::read_whole_file((root / "link.yaml").string()), bytes);  // a link to a file reads it
  EXPECT_EQ(foldtron::read_whole_file((root / "missing.yaml").string()), std::nullopt);
  EXPECT_EQ(foldtron::read_whole_file((root / "folder").string()), std::nullopt);  // no regular file
  EXPECT_EQ(foldtron::read_whole_file("/dev/null"), std::nullopt);  // a device is no config file
  if (::geteuid() != 0) {  // root reads any file
    fs::permissions(root / "config.yaml", fs::perms::none);
    EXPECT_EQ(foldtron::read_whole_file((root / "config.yaml").string()), std::nullopt);
  }
  EXPECT_FALSE(foldtron::remove_tree(root.string()));
}

TEST(Files, RemoveTreeRemovesNestedFoldersWithoutFollowingLinks) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("foldtron_remove_tree_" + std::to_string(::getpid()));
  const fs::path kept = root.string() + "_kept";
  fs::create_directories(root / "iter_0000300" / "shards");
  fs::create_directories(kept);
  std::ofstream(root / "iter_0000300" / "shards" / "rank0.safetensors") << "weights";
  std::ofstream(root / "latest") << "iter_0000300\n";
  std::ofstream(kept / "outside") << "stays";
  fs::create_directory_symlink(kept, root / "link_to_outside");

  EXPECT_FALSE(foldtron::remove_tree(root.string()));
  EXPECT_FALSE(fs::exists(fs::symlink_status(root)));
  EXPECT_TRUE(fs::exists(kept / "outside"));  // the link went, not what it pointed to
  // A plain file, and a path that is not there (no error: the same as a removal done before).
  EXPECT_FALSE(foldtron::remove_tree((kept / "outside").string()));
  EXPECT_FALSE(fs::exists(kept / "outside"));
  EXPECT_FALSE(foldtron::remove_tree(root.string()));
  // A path through a file is an error, named.
  std::ofstream(kept / "file") << "x";
  const std::error_code error = foldtron::remove_tree((kept / "file" / "below").string());
  EXPECT_EQ(error, std::errc::not_a_directory) << error.message();
  EXPECT_FALSE(foldtron::remove_tree(kept.string()));
  EXPECT_FALSE(fs::exists(kept));
}
