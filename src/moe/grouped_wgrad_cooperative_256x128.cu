// The grouped weight-gradient GEMM with cooperative 256x128 tiles (grouped_wgrad_cuda.cuh).
#include "moe/grouped_wgrad_cuda.cuh"

namespace foldtron::grouped_wgrad {

Entry cooperative_256x128() { return entry<Kernel<false, 256, 128>::Gemm>(); }

}  // namespace foldtron::grouped_wgrad
