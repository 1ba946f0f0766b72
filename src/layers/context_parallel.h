// Context parallelism: each sequence is cut into 2*cp chunks and rank r of the cp group holds
// chunks r and 2*cp-1-r (so every rank gets the same share of causal-attention work). Everything
// outside core attention is per token and needs nothing; core attention needs keys and values
// of the whole sequence:
//   allgather: gather K and V over cp (backward: reduce-scatter their gradients); each of the
//              rank's two query chunks attends the keys before it (all allowed) and its own chunk
//              (causal): pieces merged by their log-sum-exp;
//   a2a:       Ulysses: all-to-all from sequence-split to head-split (every rank gets the whole
//              sequence of heads/cp heads), plain causal attention, all-to-all back. Needs the
//              query and key/value heads of a tp rank divisible by cp.
//   p2p:       ring attention: key/value blocks travel around the cp ring (the next block's
//              exchange is posted before the current block is computed). Of a block from another
//              rank only half the scores can be allowed, all in one rectangle (the rank's second
//              query chunk over the block, or all queries over the block's first chunk), which
//              is what gets computed; results merged by their log-sum-exp. Backward recomputes
//              each block's share from the saved output and log-sum-exp and sends the key/value
//              gradients around the ring with their block, one extra hop bringing them home. No
//              attention dropout.
// Both allgather and p2p run each piece through cuDNN's or flash attention's fused kernels on CUDA
// with 16-bit inputs (no score matrix in memory), explicit fp32 math elsewhere.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/types.h>

#include "config/config.h"

namespace foldtron {

class Communicator;

// The positions [s/cp] (int64) that cp rank `rank` holds of a sequence of `seq` tokens, in the
// order it holds them: chunk rank, then chunk 2*cp-1-rank (with cp 1: 0..seq-1).
torch::Tensor cp_positions(int64_t seq, int64_t cp, int64_t rank, torch::Device device = torch::kCPU);
// Every cp rank's positions concatenated in rank order [seq]: the order of a sequence gathered
// over cp (its argsort puts gathered rows back in position order).
torch::Tensor cp_gathered_positions(int64_t seq, int64_t cp, torch::Device device = torch::kCPU);

// A rectangle of a causal score matrix that one kernel call computes: queries [q_begin,
// q_begin + q_len) over keys [k_begin, k_begin + k_len), every key allowed, or causal (a square on
// the diagonal: its i-th query sees its keys 0..i).
struct AttentionPiece {
  int64_t q_begin = 0, q_len = 0, k_begin = 0, k_len = 0;
  bool causal = false;
};

// Which kernels compute the pieces: explicit fp32 math, flash attention, or cuDNN's attention.
enum class PieceKernel { kMath, kFlash, kCudnn };

// Attention of q [b, hq, sq, d] over k, v [b, hkv, sk, d] in which each query sees the keys of
// the pieces that hold it (every query in at least one; causal pieces square), the pieces merged
// by their log-sum-exp; returns [b, hq, sq, d] in q's dtype. The kernels of piece_kernel(q) per
// piece. No dropout.
torch::Tensor piecewise_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const std::vector<AttentionPiece>& pieces, double scale);
// The same with the kernels chosen (benchmarks and tests); `kernel` must be able to run on q.
torch::Tensor piecewise_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const std::vector<AttentionPiece>& pieces, double scale, PieceKernel kernel);
// The pieces of cp rank `rank`'s `local` queries (chunks rank and 2*cp-1-rank) over the whole
// sequence's keys in natural order: each query chunk over the keys before it and, causally, its
// own chunk (cp 1: the causal whole).
std::vector<AttentionPiece> allgather_pieces(int64_t rank, int64_t cp, int64_t local);
// The piece of cp rank `rank`'s queries over the key block of rank `src` (keys from 0 within the
// block): its own block causally; of an earlier rank's block the first chunk (the second comes
// after both query chunks); of a later rank's block all of it, from the second query chunk only.
AttentionPiece ring_piece(int64_t rank, int64_t src, int64_t local);
// The kernels piecewise and ring attention of q run: on an Ampere or newer GPU with bf16 or fp16
// and a head size that is a multiple of 8, cuDNN's (up to 128 wide) or else flash attention's (up
// to 256), where this torch has them; explicit fp32 math otherwise.
PieceKernel piece_kernel(const torch::Tensor& q);
// Whether `kernel` can run the attention of q.
bool piece_kernel_runs(PieceKernel kernel, const torch::Tensor& q);

// Causal attention of this rank's queries over the whole sequence. q [b, hq, s/cp, d], k and v
// [b, hkv, s/cp, d] (this rank's tokens, at cp_positions order); returns [b, hq, s/cp, d].
// `core(q, k, v, mask)` computes attention on local tensors: mask undefined means causal over
// the given order, else a bool [sq, sk] (true: attend).
using CoreAttentionFn = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                                    const torch::Tensor&)>;
// `scale` is the softmax scale (allgather and p2p compute attention themselves). With `dropout`
// (attention dropout in training) allgather runs `core` over the gathered keys with a mask.
torch::Tensor context_parallel_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         Communicator& cp, CpCommType type, double scale, const CoreAttentionFn& core,
                                         bool dropout = false);

}  // namespace foldtron
