// trainer/parallelize.h -- tensor parallelism attached to a built single-device model from outside:
// parallelize() swaps layers for their tp forms by the family's plan and records which parameters are
// shards. The layers are tp_layers.h's (LoRA's: peft/tp_lora.h); the grid is parallel/grid.h's.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "parallel/grid.h"
#include "parallel/tensor_parallel.h"
#include "trainer/models/model.h"

namespace lmforge::trainer {

// What parallelize() did: which parameters are shards (named as named_parameters() names them);
// every other parameter is replicated on all tp ranks.
class TensorParallel {
 public:
  explicit TensorParallel(parallel::Comm& tp) : tp_(tp) {}
  parallel::Comm& comm() const { return tp_; }
  // The split of parameter `name`, or of the parameter whose AdamW moment "<name>.exp_avg" or
  // "<name>.exp_avg_sq" this is (trainer/optim.h's names); null when replicated.
  const parallel::ShardSpec* spec_of(const std::string& name) const;
  // Full tensors (CPU) from this rank's shards, replicated ones as they are; collective over tp.
  // Shards travel on `device` (the communicator's: CUDA under NCCL).
  NamedTensors gather(const NamedTensors& local, const torch::Device& device) const;
  // Every parameter of `model` as a full tensor (CPU), named as named_parameters(); collective.
  NamedTensors full_parameters(torch::nn::Module& model) const;
  // This rank's shard of the full tensor `full` named `name` (a replicated one: `full`).
  torch::Tensor shard(const std::string& name, const torch::Tensor& full) const;
  // Averages replicated parameters' gradients over tp, so the ranks' copies never drift apart;
  // those in `head_summed` are summed instead (each rank's gradient covers its own heads only).
  void average_replicated_gradients(torch::nn::Module& model) const;
  // Global L2 gradient norm (shards summed over tp, replicated parameters counted once), clipped
  // to max_norm when max_norm > 0, as clip_grad_norm is for one device.
  // The norm as a 0-dim double tensor on the gradients' device (no host read).
  torch::Tensor clip_gradients(torch::nn::Module& model, double max_norm) const;
  double clip_grad_norm(torch::nn::Module& model, double max_norm) const;

  std::map<std::string, parallel::ShardSpec> shards;
  std::set<std::string> head_summed;  // replicated parameters applied per head (TpSplit::heads)

 private:
  parallel::Comm& tp_;
};

// Converts a built single-device model in place through replace_layer, as its family's tp_rule
// says: column-parallel linears (q/k/v, gate/up, gpt2's fused c_attn by thirds, lm_head over the
// vocab), row-parallel ones (o_proj, down_proj, c_proj), the token embedding vocab-parallel and a
// tied head over the embedding's rows. LoRA layers (applied first, on the whole model) become their
// column or row form with the adapters sliced the same way. Each rank keeps its slice of the full
// weights, so tp = N starts exactly where tp = 1 does. Logits come out as vocab slices: use
// parallel::vocab_parallel_cross_entropy_sum. Throws InputError naming the layer when a size does not
// divide by tp, and for a DoRA layer. With tp = 1 it changes nothing.
std::shared_ptr<TensorParallel> parallelize(CausalLMImpl& model, parallel::Grid& grid);

// Sizes of `model` that tp must divide, as (model key, message) pairs naming the numbers; empty when
// the layout fits. Checked with the config (before start-up) and again by parallelize().
std::vector<std::pair<std::string, std::string>> tp_layout_errors(const ModelConfig& model, int64_t tp);

}  // namespace lmforge::trainer
