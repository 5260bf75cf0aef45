// trainer/trainer.h -- the training loop: micro-batches, accumulation, clipping, schedule,
// logging, periodic evaluation, checkpoints, final weights. Data, model and metrics sink come in
// built; how gradients cross ranks is the strategy's (strategy.h).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <chrono>
#include <memory>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "data/text_dataset.h"
#include "parallel/launcher.h"
#include "trainer/checkpoint.h"
#include "trainer/models/model.h"
#include "trainer/optim.h"

namespace lmforge::config {
class Section;
}
namespace lmforge::parallel {
class Comm;
class Grid;
}

namespace lmforge::trainer {

class MetricsSink;
class Strategy;
class TensorParallel;
class WeightsState;

enum class Precision { fp32, bf16 };

struct TrainConfig {
  int64_t max_steps = 0;          // optimizer steps (required)
  int64_t micro_batch_size = 8;   // sequences per rank per micro-step
  int64_t grad_accum_steps = 1;   // micro-steps per optimizer step
  int64_t seq_len = 128;          // tokens per sequence
  int64_t log_every = 10;         // steps between metric rows (and log lines without a TTY)
  int64_t eval_every = 0;         // steps between evaluations; 0: only at the end
  Precision precision = Precision::fp32;  // fp32 | bf16 (autocast: matmuls in bf16, weights and optimizer in fp32)
  parallel::DeviceRequest device = parallel::DeviceRequest::automatic;  // auto: CUDA when LibTorch sees a GPU, else cpu | cpu | cuda
};
void read_train_config(config::Section& s, TrainConfig& c);

struct EvalConfig {
  int64_t max_batches = 16;  // held-out batches per evaluation: enough for a stable mean, cheap to run
};
void read_eval_config(config::Section& s, EvalConfig& c);

// bf16 autocast on `device` while alive (matmuls in bf16; weights stay fp32). On exit it clears
// the cast-weight cache. A no-op when constructed with enabled = false.
class Autocast {
 public:
  explicit Autocast(bool enabled, torch::DeviceType device = torch::kCPU);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool enabled_;
  torch::DeviceType device_;
};

struct TrainerSettings {
  TrainConfig train;
  OptimConfig optim;
  ScheduleConfig schedule;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  bool live_progress = false;  // rewrite one status line (a terminal) instead of printing lines
  double bucket_mb = 25.0;     // data-parallel gradient bucket size
  bool zero = false;           // shard the optimizer state across ranks (ZeRO-1)
  parallel::Grid* grid = nullptr;  // the dp x tp layout of the trainer's comm; null: all data parallel
  std::shared_ptr<TensorParallel> tp;  // what parallelize() split; null: tp = 1
  std::string run_dir;         // checkpoints go to <run_dir>/checkpoints; empty: no checkpoints
  std::map<std::string, std::string> lineage;  // config hash, dataset ids, code version: into manifests
  std::string base_reference;  // a LoRA run: its frozen base as JSON (peft/lora_run.h); checkpoints and
                               // final weights then hold only the trainable tensors
  std::function<void(int64_t step)> on_eval;    // more evaluation at each eval point (eval suites); collective
  parallel::Comm* control = nullptr;  // the host communicator over the same ranks as the trainer's
                                      // (parallel/comm.h): checkpoint agreement, signals, the logged
                                      // loss; null: the trainer's own (a host one on CPUs)
};

struct EvalResult {
  double loss = 0, perplexity = 0;
  int64_t tokens = 0;
};

// Data parallel over `comm` (or over settings.grid's dp axis, `comm` being the whole world):
// every dp rank draws the same global batch of micro_batch_size x grad_accum_steps x dp windows
// and trains on its own slice; gradients are averaged, so any number of ranks trains the same
// model. The tp ranks of a dp rank share its slice. Checkpoints and final weights hold full
// tensors whatever tp is. Only the rank given a metrics sink (rank 0) writes metrics and the final
// weights (<run_dir>/model.safetensors).
class PrefetchingSource;

class Trainer {
 public:
  Trainer(CausalLM model, TrainerSettings settings, std::unique_ptr<data::BatchSource> train_data,
          std::vector<data::Batch> eval_batches, MetricsSink* metrics, parallel::Comm& comm);
  // Random windows of a token stream (tests, benchmarks); eval_tokens cut into fixed batches.
  Trainer(CausalLM model, TrainerSettings settings, data::WindowSampler train_data,
          torch::Tensor eval_tokens, MetricsSink* metrics, parallel::Comm& comm);
  ~Trainer();
  // Trains from the current step to max_steps; throws TrainingError on a non-finite loss or
  // gradient norm, and Preempted after saving a checkpoint when SIGTERM/SIGUSR1 reached any rank.
  void run();
  // Collective: saves the complete state (weights, optimizer, step and token counters, sampler,
  // every rank's RNG) as a checkpoint of the current step. Returns its directory.
  std::string save_checkpoint();
  // Restores the state saved by save_checkpoint (verified first by the caller). Throws InputError
  // listing every missing, extra or mis-shaped tensor.
  void load_checkpoint(const std::string& checkpoint_dir);
  int64_t step() const { return step_; }
  EvalResult evaluate();
  const std::vector<double>& losses() const { return losses_; }  // one per optimizer step

 private:
  // This rank's token losses summed over its micro-steps, and the global batch's target count
  // (device tensors, no host read).
  struct StepSums {
    torch::Tensor loss_sum, targets;
  };
  StepSums train_step();
  // The step's one host read: the loss over the global batch (token-weighted, agreed over the
  // host communicator), the gradient norm, and the global target count.
  struct StepScalars {
    double loss, grad_norm;
    int64_t targets;
  };
  StepScalars step_scalars(const StepSums& sums, const torch::Tensor& grad_norm);
  void log_step(int64_t step, double loss, double grad_norm, double lr);
  void log_eval(const EvalResult& r);
  void save_final_weights();

  CausalLM model_;
  torch::Device device_;  // where the model lives; batches are moved here
  TrainerSettings s_;
  std::unique_ptr<PrefetchingSource> train_data_;  // draws the next step's rows during backward
  std::vector<data::Batch> eval_batches_;  // the same every evaluation; empty: no evaluation
  MetricsSink* metrics_;
  parallel::Comm& comm_;     // every rank, on the device: the strategy's collectives
  parallel::Comm& control_;  // every rank, on the host: checkpoints, signals, the logged loss
  parallel::Comm& dp_;    // the data-parallel axis: batches, losses
  std::unique_ptr<Strategy> strategy_;
  std::vector<std::unique_ptr<CheckpointComponent>> state_;  // what a checkpoint holds besides the strategy's
  WeightsState* weights_ = nullptr;                          // state_'s weights (also the final weights)
  std::vector<double> losses_;
  int64_t step_ = 0;        // optimizer steps done
  int64_t start_step_ = 0;  // step_ when run() began (after a resume, the checkpoint's step)
  int64_t tokens_seen_ = 0;
  std::chrono::steady_clock::time_point start_, last_log_time_;
  int64_t last_log_tokens_ = 0;
};

}  // namespace lmforge::trainer
