// trainer/trainer.h -- the training loop: micro-batches, accumulation, clipping, schedule,
// logging, periodic evaluation, final weights. Data, model and run record come in built.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <chrono>
#include <memory>
#include <string>

#include "data/text_dataset.h"
#include "trainer/model.h"
#include "trainer/optim.h"

namespace lmforge::config {
class Section;
}
namespace lmforge::experiments {
class RunRecord;
}
namespace lmforge::parallel {
class Comm;
class GradSync;
}

namespace lmforge::trainer {

struct TrainConfig {
  int64_t max_steps = 0;          // optimizer steps (required)
  int64_t micro_batch_size = 8;   // sequences per rank per micro-step
  int64_t grad_accum_steps = 1;   // micro-steps per optimizer step
  int64_t seq_len = 128;          // tokens per sequence
  int64_t log_every = 10;         // steps between metric rows (and log lines without a TTY)
  int64_t eval_every = 0;         // steps between evaluations; 0: only at the end
  std::string precision = "fp32"; // fp32 | bf16 (autocast: matmuls in bf16, weights and optimizer in fp32)
};
void read_train_config(config::Section& s, TrainConfig& c);

struct EvalConfig {
  int64_t max_batches = 16;  // held-out batches per evaluation: enough for a stable mean, cheap to run
};
void read_eval_config(config::Section& s, EvalConfig& c);

struct CheckpointConfig {
  bool save_final = true;  // write model.safetensors into the run directory at the end
};
void read_checkpoint_config(config::Section& s, CheckpointConfig& c);

// bf16 autocast on CPU while alive (matmuls in bf16; weights stay fp32). On exit it clears the
// cast-weight cache. A no-op when constructed with false.
class CpuAutocast {
 public:
  explicit CpuAutocast(bool enabled);
  ~CpuAutocast();
  CpuAutocast(const CpuAutocast&) = delete;
  CpuAutocast& operator=(const CpuAutocast&) = delete;

 private:
  bool enabled_;
};

struct TrainerSettings {
  TrainConfig train;
  OptimConfig optim;
  ScheduleConfig schedule;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  bool live_progress = false;  // rewrite one status line (a terminal) instead of printing lines
  double bucket_mb = 25.0;     // data-parallel gradient bucket size
};

struct EvalResult {
  double loss = 0, perplexity = 0;
  int64_t tokens = 0;
};

// Data parallel over `comm`: every rank draws the same global batch of
// micro_batch_size x grad_accum_steps x ranks windows and trains on its own slice; gradients
// are averaged, so any number of ranks trains the same model. Only the rank given a
// RunRecord (rank 0) writes metrics, logs and weights.
class Trainer {
 public:
  Trainer(CausalLM model, TrainerSettings settings, data::WindowSampler train_data,
          torch::Tensor eval_tokens, experiments::RunRecord* record, parallel::Comm& comm);
  ~Trainer();
  // Trains to max_steps; throws TrainingError on a non-finite loss or gradient norm.
  void run();
  EvalResult evaluate();
  const std::vector<double>& losses() const { return losses_; }  // one per optimizer step

 private:
  double train_step();  // returns the mean loss over the global batch
  void log_step(int64_t step, double loss, double grad_norm, double lr);
  void save_final_weights();

  CausalLM model_;
  TrainerSettings s_;
  data::WindowSampler train_data_;
  torch::Tensor eval_tokens_;  // (N) int64, undefined when there is no eval data
  experiments::RunRecord* record_;
  parallel::Comm& comm_;
  std::unique_ptr<parallel::GradSync> grad_sync_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::vector<double> losses_;
  int64_t tokens_seen_ = 0;
  std::chrono::steady_clock::time_point start_, last_log_time_;
  int64_t last_log_tokens_ = 0;
};

}  // namespace lmforge::trainer
