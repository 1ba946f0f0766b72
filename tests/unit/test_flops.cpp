// The FLOPs count against a hand count for one config, and MoE layer counting.
#include <gtest/gtest.h>

#include "config/config_load.h"
#include "training/flops.h"

namespace foldtron {
namespace {

TEST(Flops, MixtralTruncatedMatchesAHandCount) {
  // mixtral-8x7b, 4 layers, B = 2 sequences of s = 4096.
  const Config c = load_config({"mixtral-8x7b", "", {"model.num_layers=4"}});
  const double B = 2, s = 4096, L = 4, h = 4096, V = 32000;
  // MoE: 8 experts top-2 of FFN 14336, SwiGLU (g = 1.5), every layer: 12*B*s*L*h*(14336*2*1.5).
  const double mlp = 12 * B * s * L * h * (14336.0 * 2 * 1.5);
  // Attention: head_dim 128, a = 32, n_g = 8, q = 128*32/4096 = 1.
  const double attention = 12 * B * s * L * h * h * 1.0 * (1 + 8.0 / 32 + s / (2 * h));
  const double logits = 6 * B * s * h * V;
  EXPECT_DOUBLE_EQ(flops_per_step(c, 2, 4096), mlp + attention + logits);
  EXPECT_EQ(num_moe_layers(c), 4);
}

TEST(Flops, DenseAndSharedExpertTerms) {
  const Config dense = load_config({"tiny-dense", "", {}});
  // h 64, L 4, ffn 256 SwiGLU, a 8, n_g 4, head_dim 8 (q = 1), V 256, B 3, s 64.
  const double expected = 12.0 * 3 * 64 * 4 * 64 * (256 * 1.5) + 12.0 * 3 * 64 * 4 * 64 * 64 * (1 + 0.5 + 64.0 / 128) +
                          6.0 * 3 * 64 * 64 * 256;
  EXPECT_DOUBLE_EQ(flops_per_step(dense, 3, 64), expected);
  const Config qwen = load_config({"qwen2-57b-a14b", "", {"model.num_layers=2", "moe.dense_layers=[1]"}});
  EXPECT_EQ(num_moe_layers(qwen), 1);
  // One dense layer of FFN 18944 and one MoE layer of 8 x 2560 plus the 20480 shared expert.
  const double h = 3584, L = 2, B = 1, s = 128, g = 1.5;
  const double mlp = 12 * B * s * L * h * (18944 * g * 1 / L + (2560.0 * 8 * g + 20480 * g) * 1 / L);
  const double attention = 12 * B * s * L * h * h * (128.0 * 28 / h) * (1 + 4.0 / 28 + s / (2 * h));
  EXPECT_DOUBLE_EQ(flops_per_step(qwen, 1, 128), mlp + attention + 6 * B * s * h * 151936);
}

}  // namespace
}  // namespace foldtron
