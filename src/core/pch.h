// The precompiled header of every torch layer: LibTorch and the standard headers they all use.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
