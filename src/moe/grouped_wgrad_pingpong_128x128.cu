// The grouped weight-gradient GEMM with pingpong 128x128 tiles (grouped_wgrad_cuda.cuh).
#include "moe/grouped_wgrad_cuda.cuh"

namespace foldtron::grouped_wgrad {

Entry pingpong_128x128() { return entry<Kernel<true, 128, 128>::Gemm>(); }

}  // namespace foldtron::grouped_wgrad
