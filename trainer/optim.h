// trainer/optim.h -- AdamW with decay/no-decay parameter groups and the learning-rate schedule.
// Gradient synchronisation across ranks is parallel/'s business, not this file's.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"

namespace lmforge::config {
class Section;
}

namespace lmforge::trainer {

struct OptimConfig {
  double lr = 3e-4;             // a safe AdamW peak for models under ~100M parameters
  double weight_decay = 0.1;    // as in GPT-3 and Llama pre-training
  double beta1 = 0.9;
  double beta2 = 0.95;          // Llama/GPT-3: steadier than 0.999 for LM losses
  double eps = 1e-8;
  double grad_clip = 1.0;       // global L2 norm; 0 disables clipping
  bool decay_norms_and_biases = false;  // usually left undecayed: they set scale, not capacity
  bool decay_embeddings = false;
};
void read_optim_config(config::Section& s, OptimConfig& c);

struct ScheduleConfig {
  std::string kind = "cosine";  // cosine | linear | constant (after warmup)
  int64_t warmup_steps = 0;     // linear ramp from lr/warmup_steps to lr
  double min_lr_ratio = 0.1;    // the floor as a fraction of optim.lr (Chinchilla used 0.1)
};
void read_schedule_config(config::Section& s, ScheduleConfig& c);

// The learning rate for optimizer step `step` (0-based) of `max_steps`.
double lr_at(int64_t step, int64_t max_steps, double peak_lr, const ScheduleConfig& c);

// AdamW over the module's trainable parameters in two groups: weight-decayed matrices, and
// norms, biases and embeddings without decay (unless configured otherwise).
std::unique_ptr<torch::optim::AdamW> make_optimizer(torch::nn::Module& model, const OptimConfig& c);

void set_lr(torch::optim::Optimizer& optimizer, double lr);

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

// The optimizer's parameters in group order, each named by `name_of(parameter, index)`.
NamedParams optimizer_params(torch::optim::AdamW& opt,
                             const std::function<std::string(const torch::Tensor&, size_t)>& name_of);

// AdamW's moments and step counts as tensors <name>.exp_avg, <name>.exp_avg_sq, <name>.step (CPU);
// parameters without state yet (no step taken) are left out.
NamedTensors adamw_state(torch::optim::AdamW& opt, const NamedParams& params);

// Restores what adamw_state saved. Throws InputError naming `file` and listing every parameter
// whose state is missing or mis-shaped.
void load_adamw_state(torch::optim::AdamW& opt, const NamedParams& params, const NamedTensors& saved,
                      const std::string& file);

// Global L2 norm of all gradients, clipped to `max_norm` when max_norm > 0. Returns the
// norm before clipping (non-finite if any gradient is) as a 0-dim double tensor on the
// gradients' device: no host read.
torch::Tensor clip_gradients(torch::nn::Module& model, double max_norm);
// The same, read on the host.
double clip_grad_norm(torch::nn::Module& model, double max_norm);

}  // namespace lmforge::trainer
