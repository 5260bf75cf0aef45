// parallel/tensor_parallel.h -- Megatron-style tensor parallelism: the four autograd primitives,
// column/row-parallel linears (plain and LoRA), the vocab-parallel embedding, head and
// cross-entropy, parallelize(), which converts a built single-device model in place, and the
// inference view of a split model. The grid is grid.h's; the LoRA layer itself is trainer/lora.h's.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>

#include "parallel/comm.h"
#include "trainer/lora.h"
#include "trainer/model.h"
#include "core/safetensors.h"

namespace lmforge::parallel {

class Grid;

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

// Y = X A^T + b with this rank's rows of A: weight (out/p, in), bias (out/p). Output stays sharded,
// unless gather_output is set (the output head during inference: see InferenceView).
class ColumnParallelLinearImpl : public trainer::LayerImpl {
 public:
  ColumnParallelLinearImpl(const trainer::DenseLinearImpl& full, Comm& tp, int64_t groups = 1,
                           std::shared_ptr<SharedCopyTo> copy = std::make_shared<SharedCopyTo>());
  // From the full weight (out, in) and bias (out, or undefined).
  ColumnParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias, Comm& tp, int64_t groups,
                           std::shared_ptr<SharedCopyTo> copy);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in) -> (..., out/p)
  torch::Tensor weight, bias;
  Comm& tp;
  std::shared_ptr<SharedCopyTo> copy;
  bool gather_output = false;  // (..., out) instead of (..., out/p)

 protected:
  torch::Tensor output(const torch::Tensor& local);  // local, or gathered with gather_output
};

// Y = sum over tp of X_r A_r^T, then + b: weight (out, in/p); the bias is whole, added once after the sum.
class RowParallelLinearImpl : public trainer::LayerImpl {
 public:
  RowParallelLinearImpl(const trainer::DenseLinearImpl& full, Comm& tp);
  RowParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias, Comm& tp);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in/p) -> (..., out)
  torch::Tensor weight, bias;
  Comm& tp;
};

// LoRA (trainer/lora.h) on a column-parallel base: lora_A (r, in) whole on every rank, lora_B
// (out/p, r) this rank's rows of the outputs (by `groups`, as the base). h = A dropout(x) is
// computed on the replicated input, then copy-to-tp: its backward sums the ranks' partial
// gradients of h, so A's gradient is whole and the same on every rank. Parameter names are
// LoraLinear's (weight, bias, lora_A.weight, lora_B.weight). DoRA is not supported.
class ColumnParallelLoraImpl : public ColumnParallelLinearImpl {
 public:
  ColumnParallelLoraImpl(const trainer::LoraLinearImpl& full, Comm& tp, int64_t groups, std::shared_ptr<SharedCopyTo> copy);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in) -> (..., out/p)
  torch::Tensor lora_A, lora_B;  // (r, in), (out/p, r)
  double scale, dropout;
};

// LoRA on a row-parallel base: lora_A (r, in/p) this rank's input columns, lora_B (out, r) whole.
// h = reduce-from-tp(dropout(x_r) A_r^T) is whole on every rank; h B^T is added after the base's
// reduce. The dropout mask is the slice of the full-width mask every rank draws alike, so it is
// the mask one device draws.
class RowParallelLoraImpl : public RowParallelLinearImpl {
 public:
  RowParallelLoraImpl(const trainer::LoraLinearImpl& full, Comm& tp);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in/p) -> (..., out)
  torch::Tensor lora_A, lora_B;  // (r, in/p), (out, r)
  double scale, dropout;
};

// Rows vocab_start .. vocab_start + V/p of the token table; ids outside them contribute zeros
// and the ranks' rows are summed, so every rank gets the full embedding.
class VocabParallelEmbeddingImpl : public trainer::LayerImpl {
 public:
  VocabParallelEmbeddingImpl(const trainer::TokenEmbeddingImpl& full, Comm& tp);
  torch::Tensor forward(const torch::Tensor& ids) override;  // (B, T) -> (B, T, C)
  bool is_embedding() const override { return true; }
  torch::Tensor weight;  // (V/p, C)
  int64_t vocab_start;
  Comm& tp;
};

// A tied output head over the vocab-parallel embedding's rows (held, not registered):
// (B, T, C) -> this rank's logits (B, T, V/p).
class VocabParallelTiedHeadImpl : public trainer::LayerImpl {
 public:
  VocabParallelTiedHeadImpl(torch::Tensor embedding_weight, Comm& tp) : weight(std::move(embedding_weight)), tp(tp) {}
  torch::Tensor forward(const torch::Tensor& h) override;
  torch::Tensor weight;
  Comm& tp;
  bool gather_output = false;  // (B, T, V) instead of (B, T, V/p): see InferenceView
};

// While alive, a tp-split model looks whole to inference code written for one device (eval
// suites, scoring, generation), on every tp rank: the output head returns the full logits
// (B, T, V), gathered from the ranks' vocab slices, and the token embedding is a whole table
// (gathered once), so the vocabulary checks see V rows. Training keeps the slices
// (vocab_parallel_cross_entropy). A model that was not split is left alone. Collective.
class InferenceView {
 public:
  explicit InferenceView(trainer::CausalLMImpl& model);
  ~InferenceView();
  InferenceView(const InferenceView&) = delete;
  InferenceView& operator=(const InferenceView&) = delete;

 private:
  trainer::CausalLMImpl& model_;
  bool* flag_ = nullptr;                // the head's gather_output
  std::string embedding_path_;         // the vocab-parallel embedding, swapped out while alive
  trainer::Layer embedding_;
};

// Mean next-token cross-entropy (fp32, targets -100 ignored) from this rank's vocab slice of the
// logits (B, T, V/p), rank r holding ids r*V/p .. (r+1)*V/p - 1. Three allreduces of (B*T)
// values; the full (B, T, V) logits are never built. Equals causal_lm_loss on the gathered logits.
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, Comm& tp);

// What parallelize() did: which parameters are shards (named as named_parameters() names them);
// every other parameter is replicated on all tp ranks.
class TensorParallel {
 public:
  explicit TensorParallel(Comm& tp) : tp_(tp) {}
  Comm& comm() const { return tp_; }
  // The split of parameter `name`, or of the parameter whose AdamW moment "<name>.exp_avg" or
  // "<name>.exp_avg_sq" this is (trainer/optim.h's names); null when replicated.
  const ShardSpec* spec_of(const std::string& name) const;
  // Full tensors (CPU) from this rank's shards, replicated ones as they are; collective over tp.
  // Shards travel on `device` (the communicator's: CUDA under NCCL).
  NamedTensors gather(const NamedTensors& local, const torch::Device& device) const;
  // Every parameter of `model` as a full tensor (CPU), named as named_parameters(); collective.
  NamedTensors full_parameters(torch::nn::Module& model) const;
  // This rank's shard of the full tensor `full` named `name` (a replicated one: `full`).
  torch::Tensor shard(const std::string& name, const torch::Tensor& full) const;
  // Averages replicated parameters' gradients over tp, so the ranks' copies never drift apart.
  void average_replicated_gradients(torch::nn::Module& model) const;
  // Global L2 gradient norm (shards summed over tp, replicated parameters counted once), clipped
  // to max_norm when max_norm > 0, as trainer::clip_grad_norm is for one device.
  double clip_grad_norm(torch::nn::Module& model, double max_norm) const;

  std::map<std::string, ShardSpec> shards;

 private:
  Comm& tp_;
};

// Converts a built single-device llama or gpt2 model in place through replace_layer: q/k/v (and
// gpt2's fused c_attn by thirds), gate/up and c_fc column-parallel; o_proj, down_proj and c_proj
// row-parallel; the token embedding vocab-parallel; lm_head column-parallel over the vocab (tied:
// over the embedding's rows). LoRA layers (apply_lora runs first, on the whole model) become their
// column or row form with the adapters sliced the same way. Each rank keeps its slice of the full
// weights, so tp = N starts exactly where tp = 1 does. Logits come out as vocab slices: use
// vocab_parallel_cross_entropy. Throws InputError naming the layer when a size does not divide by
// tp, and for a DoRA layer. With tp = 1 it changes nothing.
std::shared_ptr<TensorParallel> parallelize(trainer::CausalLMImpl& model, Grid& grid);

}  // namespace lmforge::parallel
