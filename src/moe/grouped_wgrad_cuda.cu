// The grouped weight-gradient GEMM's entry points (grouped_wgrad_cuda.h): the device checks and
// the choice of tile shape; the kernels are in grouped_wgrad_<tiles>.cu.
#include <cutlass/version.h>

#include <climits>
#include <cstdint>

#include "core/cuda_types.cuh"
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

// Each tile shape's name and kernels, in kAllWgradTiles' order.
struct Shape {
  WgradTiles tiles;
  const char* name;
  Entry (*entry)();
};
constexpr Shape kShapes[] = {{WgradTiles::kCooperative128x256, "cooperative 128x256", &cooperative_128x256},
                             {WgradTiles::kCooperative256x128, "cooperative 256x128", &cooperative_256x128},
                             {WgradTiles::kPingpong128x128, "pingpong 128x128", &pingpong_128x128}};

const Shape& shape_of(WgradTiles tiles) {
  for (const Shape& shape : kShapes) {
    if (shape.tiles == tiles) return shape;
  }
  throw std::invalid_argument("grouped_wgrad: unknown WgradTiles " + std::to_string(static_cast<int>(tiles)));
}

}  // namespace
}  // namespace grouped_wgrad

std::string wgrad_config_name(const WgradConfig& config) {
  return std::string(grouped_wgrad::shape_of(config.tiles).name) + (config.along_n ? ", along N" : ", down M") +
         ", swizzle " + std::to_string(config.swizzle);
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
  return grouped_wgrad::shape_of(config.tiles).entry().buffer_bytes(groups);
}

bool grouped_wgrad_operands_fit(const void* dy, const void* x, const float* out, int64_t m, int64_t n) {
  return m > 0 && n > 0 && m % 8 == 0 && n % 8 == 0 && m <= INT32_MAX && n <= INT32_MAX && aligned_to(dy, 16) &&
         aligned_to(x, 16) && aligned_to(out, 16);
}

void grouped_wgrad_cuda(const void* dy, const void* x, const int32_t* row_ends, float* out, int groups, int64_t m,
                        int64_t n, bool accumulate, void* buffer, const WgradConfig& config, void* stream) {
  if (groups <= 0) return;
  // The caller's guards (experts.cpp, the bench) ensure these.
  if (!grouped_wgrad_operands_fit(dy, x, out, m, n)) {
    throw std::invalid_argument("grouped_wgrad_cuda: m and n must be positive multiples of 8 below 2^31 (not " +
                                std::to_string(m) + " and " + std::to_string(n) +
                                ") and dy, x and out 16-byte aligned");
  }
  if (!aligned_to(buffer, 128)) {
    throw std::invalid_argument("grouped_wgrad_cuda: the buffer must be 128-byte aligned (it holds TMA descriptors)");
  }
  if (config.swizzle != 1 && config.swizzle != 2 && config.swizzle != 4 && config.swizzle != 8) {
    throw std::invalid_argument("grouped_wgrad_cuda: swizzle must be 1, 2, 4 or 8, not " +
                                std::to_string(config.swizzle));
  }
  grouped_wgrad::shape_of(config.tiles)
      .entry()
      .run({dy, x, row_ends, out, groups, static_cast<int>(m), static_cast<int>(n), accumulate, config.along_n,
            config.swizzle, buffer, static_cast<cudaStream_t>(stream)});
}

}  // namespace foldtron
