// A fast 64-bit checksum of a byte stream (checkpoint files): 32-byte blocks, each of its four
// 8-byte words mixed by multiply and rotate into its own lane (four independent chains, so the
// CPU overlaps them: several GB/s on one core), the lanes and the tail bytes folded together,
// then an avalanche. It catches truncation and corruption; it is no cryptographic hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace foldtron {

class Checksum {
 public:
  void update(const void* data, size_t bytes);
  uint64_t value() const;  // of everything so far (update may continue)
  // As 16 lowercase hex digits.
  static std::string hex(uint64_t value);

 private:
  static constexpr size_t kBlock = 32;
  void mix_block(const unsigned char* block);

  uint64_t lanes_[4] = {0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull, 0x2545f4914f6cdd1dull};
  uint64_t length_ = 0;
  unsigned char pending_[kBlock] = {};
  size_t pending_bytes_ = 0;
};

// The checksum of a whole file; IoError naming it when it cannot be read.
uint64_t file_checksum(const std::string& path);

}  // namespace foldtron
