// parallel/tensor_parallel.h -- Megatron-style tensor parallelism on tensors: the four autograd
// primitives, shard specs, a shared copy-to, dropout on a slice and the vocab-parallel loss. The
// layers built from them and parallelize() live in trainer/ (tp_layers.h, parallelize.h).
#pragma once

#include <torch/torch.h>

#include "parallel/comm.h"

namespace lmforge::parallel {

// The four primitives, each an autograd function over the tp group `tp`:
// copy-to (Megatron's f): identity forward; backward sums the gradient over tp.
torch::Tensor copy_to_tp(const torch::Tensor& x, Comm& tp);
// reduce-from (g): sums over tp forward; identity backward.
torch::Tensor reduce_from_tp(const torch::Tensor& x, Comm& tp);
// gather-from: (..., C/p) -> (..., C) concatenating the ranks' last dims; backward keeps this rank's slice.
torch::Tensor gather_from_tp(const torch::Tensor& x, Comm& tp);
// scatter-to: (..., C) -> (..., C/p) this rank's slice of the last dim; backward gathers.
torch::Tensor scatter_to_tp(const torch::Tensor& x, Comm& tp);

// How a parameter is split over tp: along `dim`, in `groups` equal blocks split separately
// (gpt2's fused c_attn holds the q, k and v thirds: groups = 3, each rank keeps its heads of each).
struct ShardSpec {
  int64_t dim = 0;
  int64_t groups = 1;
};
// Rank `rank` of `size`'s shard of `full` (a new tensor).
torch::Tensor shard_of(const torch::Tensor& full, ShardSpec spec, int rank, int size);
// The full tensor from every rank's shard; collective over `tp`.
torch::Tensor gather_shards(const torch::Tensor& local, ShardSpec spec, Comm& tp);

// One copy-to shared by column-parallel layers that read the same input (q, k and v; gate and
// up): its backward then sums their input gradients in a single allreduce, as Megatron's fused
// qkv and fc1 do. A different input tensor gets a copy of its own.
class SharedCopyTo {
 public:
  torch::Tensor operator()(const torch::Tensor& x, Comm& tp);

 private:
  torch::Tensor input_, copied_;  // the last input and its copy-to
};

// Dropout on this rank's slice (..., c) of an input split along its last dim: every rank draws
// the full (..., p*c) mask (the generators of a tp group are in step) and keeps its slice, so the
// result is the slice of what at::dropout does on one device (same draws: bernoulli_ on the shape).
torch::Tensor dropout_of_slice(const torch::Tensor& x, double p, bool training, Comm& tp);

// Next-token cross-entropy (fp32, targets -100 ignored) summed over the targets, from this rank's
// vocab slice of the logits (B, T, V/p), rank r holding ids r*V/p .. (r+1)*V/p - 1. Three
// allreduces of (B*T) values; the full (B, T, V) logits are never built. Equals
// causal_lm_loss_sum on the gathered logits.
torch::Tensor vocab_parallel_cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets, Comm& tp);

}  // namespace lmforge::parallel
