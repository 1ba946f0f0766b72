// Files at the POSIX level, shared by the layers that write or map large files (checkpoints,
// indexed datasets): an owned descriptor, whole reads and writes that retry on EINTR, a file
// written under a temporary name and renamed into place only when complete, and a read-only
// memory map.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <system_error>

#include "core/errors.h"

namespace foldtron {

// An open file descriptor, closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  // Closes now and reports whether close succeeded (a failed close can mean lost writes).
  bool close();

 private:
  int fd_;
};

// strerror(errno).
std::string errno_text();
// The whole file's bytes; nullopt when it is not a regular file or cannot be opened or read
// (callers raise their own typed error naming the file and what it was for).
std::optional<std::string> read_whole_file(const std::string& path);
// Reads exactly `size` bytes at `offset`; false (errno set, or 0 at end of file) otherwise.
bool pread_all(int fd, char* data, uint64_t size, uint64_t offset);
// Writes exactly `size` bytes; false (errno set) otherwise.
bool write_all(int fd, const char* data, uint64_t size);

// A file written as PATH.tmp and renamed to PATH by commit() after an fsync (and the folder
// synced), so PATH is either the old file or the complete new one. Destroyed uncommitted, it
// removes PATH.tmp. Failures are IoErrors naming the file. Each write is a fault-injection point
// (core/fault.h), `file_write` unless the owner names another (checkpoint files: checkpoint_write).
class AtomicFile {
 public:
  explicit AtomicFile(std::string path, const char* fault_point = "file_write");
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, uint64_t size);
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return tmp_; }

 private:
  IoError fail(const std::string& what);

  std::string path_, tmp_;
  const char* fault_point_;
  int fd_ = -1;
};

// Writes `text` to PATH through an AtomicFile.
void write_file_atomically(const std::string& path, const std::string& text);
// fsync on a folder (after a rename into it), best effort: some filesystems refuse it.
void sync_dir(const std::string& dir);

// Removes PATH and, for a folder, everything under it, without following symbolic links; a PATH
// that does not exist is no error. Use it instead of std::filesystem::remove_all: the torch
// wheel's libtorch.so exports its own build of libstdc++'s filesystem functions, which the
// dynamic linker binds our calls to, and its remove_all calls through a null pointer on a
// non-empty folder (the GPU machine's SIGSEGV in a checkpoint save that pruned an old one,
// docs/reliability.md).
std::error_code remove_tree(const std::string& path);

// A whole file mapped read-only (shared, so processes on a node share its pages); an empty file
// maps to nothing. IoError naming the file when it cannot be opened or mapped.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return static_cast<const char*>(data_); }
  int64_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace foldtron
