// File checksums (see checksum.h).
#include "core/checksum.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "core/errors.h"

namespace foldtron {
namespace {

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t mix(uint64_t state, uint64_t word) {
  state ^= word * 0x87c37b91114253d5ull;
  return rotl(state, 31) * 0x4cf5ad432745937full;
}

}  // namespace

void Checksum::mix_block(const unsigned char* block) {
  for (int lane = 0; lane < 4; ++lane) {
    uint64_t word;
    std::memcpy(&word, block + 8 * lane, 8);
    lanes_[lane] = mix(lanes_[lane], word);
  }
}

void Checksum::update(const void* data, size_t bytes) {
  if (bytes == 0) return;  // an empty tensor's data may be null, which memcpy must not be given
  const auto* p = static_cast<const unsigned char*>(data);
  length_ += bytes;
  if (pending_bytes_ > 0) {
    const size_t take = std::min(bytes, kBlock - pending_bytes_);
    std::memcpy(pending_ + pending_bytes_, p, take);
    pending_bytes_ += take;
    p += take;
    bytes -= take;
    if (pending_bytes_ < kBlock) return;
    mix_block(pending_);
    pending_bytes_ = 0;
  }
  for (; bytes >= kBlock; bytes -= kBlock, p += kBlock) mix_block(p);
  std::memcpy(pending_, p, bytes);
  pending_bytes_ = bytes;
}

uint64_t Checksum::value() const {
  uint64_t h = length_;
  for (uint64_t lane : lanes_) h = mix(h, lane);
  for (size_t i = 0; i < pending_bytes_; i += 8) {
    uint64_t word = 0;
    std::memcpy(&word, pending_ + i, std::min<size_t>(8, pending_bytes_ - i));
    h = mix(h, word);
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

std::string Checksum::hex(uint64_t value) { return fmt::format("{:016x}", value); }

uint64_t file_checksum(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("cannot read '{}'", path), "check that the file exists and is readable");
  Checksum sum;
  std::vector<char> buffer(size_t{1} << 22);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    sum.update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw IoError(fmt::format("cannot read '{}' to its end", path), "check the disk and the file");
  return sum.value();
}

}  // namespace foldtron
