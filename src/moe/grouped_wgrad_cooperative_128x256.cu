// The grouped weight-gradient GEMM with cooperative 128x256 tiles (grouped_wgrad_cuda.cuh).
#include "moe/grouped_wgrad_cuda.cuh"

namespace foldtron::grouped_wgrad {

Entry cooperative_128x256() { return entry<Kernel<false, 128, 256>::Gemm>(); }

}  // namespace foldtron::grouped_wgrad
