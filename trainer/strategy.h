// trainer/strategy.h -- how gradients are reduced and parameters stepped across ranks: one object
// behind one interface (data parallel, ZeRO-1, tensor parallel x data parallel), chosen once.
// The collectives are parallel/'s; the loop that calls this is trainer.cpp's.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "core/safetensors.h"
#include "trainer/checkpoint.h"
#include "trainer/optim.h"

namespace lmforge::parallel {
class Comm;
class Grid;
}

namespace lmforge::trainer {

class TensorParallel;

// The gradient and optimizer side of a training step, and the optimizer state it checkpoints.
// Every method is collective over the ranks the strategy spans unless it says otherwise.
class Strategy : public CheckpointComponent {
 public:
  ~Strategy() override = default;
  // Before each micro-step's backward; `last` marks the micro-step that ends the accumulation.
  virtual void begin_backward(bool last) = 0;
  virtual void finish_backward() = 0;  // after the last micro-step's backward
  // Gradients averaged over the data-parallel ranks and clipped to max_norm (0: no clipping);
  // returns the global norm before clipping, a 0-dim double tensor on the device (no host read).
  virtual torch::Tensor reduce_and_clip(double max_norm) = 0;
  virtual void step(double lr) = 0;
  virtual void zero_grad() = 0;
  // The next-token loss of this rank's logits summed over their targets (under tp: from its vocab
  // slice); the trainer divides by the global batch's target count.
  virtual torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& targets) = 0;
  // Full tensors from this rank's (collective under tp), and this rank's from full ones.
  virtual NamedTensors full(const NamedTensors& local) = 0;
  virtual NamedTensors local(const NamedTensors& full) = 0;
  // Whether saving needs every rank (tensors gathered) or rank 0 alone.
  virtual bool gathers_on_save() const = 0;
  // InputError when a checkpoint saved with trainer_state `state` cannot resume under this strategy
  // (checked before any tensor is read).
  virtual void check_resumable(const std::string& dir, const nlohmann::json& state) const = 0;
};

struct StrategyOptions {
  OptimConfig optim;
  double bucket_mb = 25.0;  // data-parallel gradient bucket size
  bool zero = false;        // ZeRO-1: the optimizer state sharded over the data-parallel ranks
  parallel::Grid* grid = nullptr;          // the dp x tp layout; null: every rank data parallel
  std::shared_ptr<TensorParallel> tp;      // what parallelize() split; null: tp = 1
};

// Data parallel (plain or ZeRO-1) over `comm` or the grid's dp axis, with tensor parallelism when
// options.tp is set. Broadcasts rank 0's parameters to the data-parallel ranks.
std::unique_ptr<Strategy> make_strategy(torch::nn::Module& model, const StrategyOptions& options, parallel::Comm& comm);

}  // namespace lmforge::trainer
