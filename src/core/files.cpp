// POSIX file helpers (see files.h).
#include "core/files.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "core/fault.h"

namespace foldtron {

std::optional<std::string> read_whole_file(const std::string& path) {
  std::error_code error;
  // Not a regular file: a folder would open and then fail to read, a device or FIFO never end.
  if (!std::filesystem::is_regular_file(path, error)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  if (in.peek() != std::ifstream::traits_type::eof()) text << in.rdbuf();  // (an empty file reads as "")
  if (in.bad() || !text) return std::nullopt;
  return text.str();
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

bool Fd::close() {
  const int fd = fd_;
  fd_ = -1;
  return ::close(fd) == 0;
}

std::string errno_text() { return std::strerror(errno); }

bool pread_all(int fd, char* data, uint64_t size, uint64_t offset) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, data, std::min<uint64_t>(size, 1ull << 30), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = 0;
      return false;
    }
    data += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

bool write_all(int fd, const char* data, uint64_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, std::min<uint64_t>(size, 1ull << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<uint64_t>(n);
  }
  return true;
}

AtomicFile::AtomicFile(std::string path, const char* fault_point)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), fault_point_(fault_point) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw fail("create");
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {  // not committed: nothing is left behind
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

IoError AtomicFile::fail(const std::string& what) {
  const std::string reason = errno_text();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  return IoError(fmt::format("cannot {} '{}': {}", what, tmp_, reason),
                 "check that the directory exists, is writable and has free space");
}

void AtomicFile::write(const void* data, uint64_t size) {
  FT_CHECK(fd_ >= 0, "AtomicFile::write after commit of " + path_);
  if (fault_at(fault_point_)) {
    errno = ENOSPC;
    throw fail("write");
  }
  if (size > 0 && !write_all(fd_, static_cast<const char*>(data), size)) throw fail("write");
}

void AtomicFile::commit() {
  FT_CHECK(fd_ >= 0, "AtomicFile::commit twice for " + path_);
  if (::fsync(fd_) != 0) throw fail("flush");
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp_.c_str());
    throw IoError(fmt::format("cannot close '{}': {}", tmp_, reason), "check the disk and its free space");
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp_.c_str());
    throw IoError(fmt::format("cannot rename '{}' to '{}': {}", tmp_, path_, reason),
                  "check that the target is not a directory and the folder is writable");
  }
  // Make the rename itself durable.
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  sync_dir(parent.empty() ? "." : parent.string());
}

void write_file_atomically(const std::string& path, const std::string& text) {
  AtomicFile file(path);
  file.write(text.data(), text.size());
  file.commit();
}

void sync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() >= 0) ::fsync(fd.get());
}

namespace {

// nftw's visitor, children before their folder (FTW_DEPTH): remove() unlinks a file or link and
// removes an emptied folder. A nonzero return (the errno) stops the walk and becomes nftw's. An
// entry gone meanwhile is no failure; a folder that could not be read is named as such (its
// removal would report only that it is not empty).
int remove_entry(const char* path, const struct stat*, int type, struct FTW*) {
  if (::remove(path) == 0 || errno == ENOENT) return 0;
  return type == FTW_DNR ? EACCES : errno;
}

}  // namespace

std::error_code remove_tree(const std::string& path) {
  if (fault_at("remove")) return std::error_code(EIO, std::generic_category());
  struct stat info;
  if (::lstat(path.c_str(), &info) != 0) {
    return errno == ENOENT ? std::error_code() : std::error_code(errno, std::generic_category());
  }
  // Up to 16 descriptors open at once; FTW_PHYS: links are removed, never followed.
  const int result = ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (result == 0) return {};
  return std::error_code(result > 0 ? result : errno, std::generic_category());
}

MappedFile::MappedFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    throw IoError(fmt::format("cannot open '{}': {}", path, errno_text()), "check that it exists and is readable");
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    throw IoError(fmt::format("cannot stat '{}': {}", path, errno_text()), "check the file and the disk");
  }
  size_ = static_cast<int64_t>(info.st_size);
  if (size_ == 0) return;
  data_ = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_SHARED, fd.get(), 0);
  if (data_ == MAP_FAILED) {
    data_ = nullptr;
    throw IoError(fmt::format("cannot map '{}' ({} bytes): {}", path, size_, errno_text()),
                  "check the file system supports mmap and the address space limit (ulimit -v)");
  }
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, static_cast<size_t>(size_));
}

}  // namespace foldtron
