// Model FLOPs per training step, counted exactly as Megatron-Core counts them (so MFU compares
// with published numbers), forward and backward, for B sequences of length s:
//   F = 12*B*s*L*h*(ffn*g*L_d/L + (moe_ffn*k*g + shared_ffn*g)*L_m/L)
//     + 12*B*s*L*h^2*q*(1 + n_g/a + s/(2h)) + 6*B*s*h*V
// L layers (L_d dense, L_m MoE), h hidden, g = 3/2 for SwiGLU else 1, a heads, n_g KV groups,
// q = head_dim*a/h, k experts per token, V vocabulary.
// MFU = F / (step time * GPUs * peak FLOP/s).
#pragma once

#include <cstdint>

#include "config/config.h"

namespace foldtron {

// Layers with an MoE MLP (the rest are dense).
int64_t num_moe_layers(const Config& config);

double flops_per_step(const Config& config, int64_t sequences, int64_t seq_length);

// The same count for one sequence of an encoder-decoder with s source and t target tokens:
// per encoder layer and source token the projections, MLP and bidirectional attention
// (12*h^2*q*(1 + n_g/a) + mlp + 12*s*h*q); per decoder layer and target token the self-attention
// as above with causal t/2, the cross-attention's query and output projections (12*h^2*q) and
// scores over the source (12*s*h*q), and per source token its key/value projections
// (12*h^2*q*n_g/a); the output layer 6*t*h*V. t = 0: the encoder alone with the output layer
// over the source, 6*s*h*V (masked language modelling).
double encoder_decoder_flops(const Config& config, double source_length, double target_length);

}  // namespace foldtron
