// The grouped weight-gradient GEMM's entry points (grouped_wgrad_cuda.h): the device checks and
// the choice of tile shape; the kernels are in grouped_wgrad_<tiles>.cu.
#include <cutlass/version.h>

#include "moe/grouped_wgrad_cuda.cuh"

namespace foldtron {
namespace grouped_wgrad {

int sm_count() {
  int device = 0, count = 0;
  FT_CUDA_CHECK(cudaGetDevice(&device));
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

namespace {

Entry entry_of(WgradTiles tiles) {
  switch (tiles) {
    case WgradTiles::kCooperative128x256:
      return cooperative_128x256();
    case WgradTiles::kCooperative256x128:
      return cooperative_256x128();
    case WgradTiles::kPingpong128x128:
      return pingpong_128x128();
  }
  throw std::logic_error("unknown WgradTiles");
}

}  // namespace
}  // namespace grouped_wgrad

std::string wgrad_config_name(const WgradConfig& config) {
  std::string name;
  switch (config.tiles) {
    case WgradTiles::kCooperative128x256:
      name = "cooperative 128x256";
      break;
    case WgradTiles::kCooperative256x128:
      name = "cooperative 256x128";
      break;
    case WgradTiles::kPingpong128x128:
      name = "pingpong 128x128";
      break;
  }
  return name + (config.along_n ? ", along N" : ", down M") + ", swizzle " + std::to_string(config.swizzle);
}

const char* grouped_wgrad_cutlass_version() {
  static const std::string version = std::to_string(CUTLASS_MAJOR) + "." + std::to_string(CUTLASS_MINOR) + "." +
                                     std::to_string(CUTLASS_PATCH);
  return version.c_str();
}

bool grouped_wgrad_supported() {
  int device = 0, major = 0, minor = 0;
  FT_CUDA_CHECK(cudaGetDevice(&device));
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major == 9 && minor == 0;
}

size_t grouped_wgrad_buffer_bytes(int groups, const WgradConfig& config) {
  return grouped_wgrad::entry_of(config.tiles).buffer_bytes(groups);
}

void grouped_wgrad_cuda(const void* dy, const void* x, const int32_t* row_ends, float* out, int groups, int64_t m,
                        int64_t n, bool accumulate, void* buffer, const WgradConfig& config, void* stream) {
  if (groups <= 0) return;
  if (reinterpret_cast<uintptr_t>(buffer) % 128 != 0) {
    throw std::invalid_argument("grouped_wgrad_cuda: the buffer must be 128-byte aligned (it holds TMA descriptors)");
  }
  if (config.swizzle != 1 && config.swizzle != 2 && config.swizzle != 4 && config.swizzle != 8) {
    throw std::invalid_argument("grouped_wgrad_cuda: swizzle must be 1, 2, 4 or 8, not " +
                                std::to_string(config.swizzle));
  }
  grouped_wgrad::entry_of(config.tiles)
      .run({dy, x, row_ends, out, groups, static_cast<int>(m), static_cast<int>(n), accumulate, config.along_n,
            config.swizzle, buffer, static_cast<cudaStream_t>(stream)});
}

}  // namespace foldtron
