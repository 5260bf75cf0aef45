// trainer/trainer.cpp -- Trainer::run and the pieces it calls once per step.
// No parallelism or checkpoint/resume logic yet: those plug in around train_step.
#include "trainer/trainer.h"

#include <ATen/autocast_mode.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "experiments/run_record.h"
#include "parallel/comm.h"
#include "parallel/grad_sync.h"
#include "trainer/config_reader.h"
#include "trainer/errors.h"
#include "trainer/safetensors.h"

namespace lmforge::trainer {

void read_train_config(config::Section& s, TrainConfig& c) {
  using config::at_least;
  s.field("max_steps", c.max_steps, at_least(1), config::Need::required);
  s.field("micro_batch_size", c.micro_batch_size, at_least(1));
  s.field("grad_accum_steps", c.grad_accum_steps, at_least(1));
  s.field("seq_len", c.seq_len, at_least(1));
  s.field("log_every", c.log_every, at_least(1));
  s.field("eval_every", c.eval_every, at_least(0));
  s.field("precision", c.precision, {"fp32", "bf16"});
}

void read_eval_config(config::Section& s, EvalConfig& c) {
  s.field("max_batches", c.max_batches, config::at_least(1));
}

void read_checkpoint_config(config::Section& s, CheckpointConfig& c) {
  s.field("save_final", c.save_final);
}

CpuAutocast::CpuAutocast(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
#else
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
#endif
}

CpuAutocast::~CpuAutocast() {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, false);
#else
  at::autocast::set_cpu_enabled(false);
#endif
  at::autocast::clear_cache();  // the next forward must see the weights the optimizer updated
}

namespace {
std::string format_duration(double seconds) {
  int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}
}  // namespace

Trainer::Trainer(CausalLM model, TrainerSettings settings, data::WindowSampler train_data,
                 torch::Tensor eval_tokens, experiments::RunRecord* record, parallel::Comm& comm)
    : model_(std::move(model)),
      s_(std::move(settings)),
      train_data_(std::move(train_data)),
      eval_tokens_(std::move(eval_tokens)),
      record_(record),
      comm_(comm),
      grad_sync_(std::make_unique<parallel::GradSync>(*model_, comm, s_.bucket_mb)),
      optimizer_(make_optimizer(*model_, s_.optim)) {
  grad_sync_->broadcast_parameters();
}

Trainer::~Trainer() = default;

void Trainer::run() {
  const int64_t max_steps = s_.train.max_steps;
  start_ = last_log_time_ = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < max_steps; ++step) {
    double lr = lr_at(step, max_steps, s_.optim.lr, s_.schedule);
    set_lr(*optimizer_, lr);
    double loss = train_step();
    double grad_norm = clip_grad_norm(*model_, s_.optim.grad_clip);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm))
      throw TrainingError("step " + std::to_string(step + 1) + ": loss " + std::to_string(loss) +
                          ", gradient norm " + std::to_string(grad_norm) +
                          ": not finite, stopping before the update (try a lower optim.lr or check the data)");
    optimizer_->step();
    losses_.push_back(loss);
    log_step(step + 1, loss, grad_norm, lr);
    bool last = step + 1 == max_steps;
    if (eval_tokens_.defined() && (last || (s_.train.eval_every > 0 && (step + 1) % s_.train.eval_every == 0))) {
      EvalResult r = evaluate();
      if (comm_.rank() == 0)
        std::fprintf(stderr, "%seval step %lld: loss %.4f  perplexity %.2f\n", s_.live_progress ? "\n" : "",
                   static_cast<long long>(step + 1), r.loss, r.perplexity);
      if (record_)
        record_->append_metrics({{"step", step + 1}, {"eval_loss", r.loss}, {"eval_ppl", r.perplexity},
                                 {"eval_tokens", r.tokens}});
    }
  }
  if (s_.checkpoint.save_final) save_final_weights();
}

double Trainer::train_step() {
  model_->train();
  optimizer_->zero_grad();
  const int64_t accum = s_.train.grad_accum_steps, micro_batch = s_.train.micro_batch_size;
  data::Batch global = train_data_.next(micro_batch * accum * comm_.size());  // (B x accum x ranks, T)
  double loss_sum = 0;
  for (int64_t micro = 0; micro < accum; ++micro) {
    int64_t first = (comm_.rank() * accum + micro) * micro_batch;
    auto inputs = global.inputs.narrow(0, first, micro_batch), targets = global.targets.narrow(0, first, micro_batch);
    torch::Tensor loss;
    {
      CpuAutocast autocast(s_.train.precision == "bf16");
      loss = causal_lm_loss(model_->forward(inputs), targets);
    }
    grad_sync_->begin_backward(/*sync=*/micro == accum - 1);
    (loss / static_cast<double>(accum)).backward();
    loss_sum += loss.item<double>();
  }
  grad_sync_->finish();
  tokens_seen_ += global.inputs.numel();
  auto mean_loss = torch::tensor({loss_sum / static_cast<double>(accum)}, torch::kDouble);
  comm_.allreduce(mean_loss, parallel::ReduceOp::avg);  // a NaN on any rank reaches every rank
  return mean_loss.item<double>();
}

EvalResult Trainer::evaluate() {
  torch::NoGradGuard no_grad;
  model_->eval();
  auto batches = data::fixed_batches(eval_tokens_, s_.train.seq_len, s_.train.micro_batch_size, s_.eval.max_batches);
  auto sums = torch::zeros({2}, torch::kDouble);  // [loss x tokens, tokens] over this rank's batches
  for (size_t i = comm_.rank(); i < batches.size(); i += comm_.size()) {
    CpuAutocast autocast(s_.train.precision == "bf16");
    double loss = causal_lm_loss(model_->forward(batches[i].inputs), batches[i].targets).item<double>();
    sums[0] += loss * static_cast<double>(batches[i].targets.numel());
    sums[1] += static_cast<double>(batches[i].targets.numel());
  }
  comm_.allreduce(sums, parallel::ReduceOp::sum);
  EvalResult r;
  r.tokens = static_cast<int64_t>(sums[1].item<double>());
  r.loss = r.tokens > 0 ? sums[0].item<double>() / static_cast<double>(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

void Trainer::log_step(int64_t step, double loss, double grad_norm, double lr) {
  if (comm_.rank() != 0) return;
  const int64_t max_steps = s_.train.max_steps;
  bool logged = step == 1 || step % s_.train.log_every == 0 || step == max_steps;
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double eta = elapsed / static_cast<double>(step) * static_cast<double>(max_steps - step);
  double window = std::chrono::duration<double>(now - last_log_time_).count();
  double tokens_per_s = window > 0 ? static_cast<double>(tokens_seen_ - last_log_tokens_) / window : 0.0;
  if (s_.live_progress) {
    std::fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  eta %s   ", static_cast<long long>(step),
                 static_cast<long long>(max_steps), loss, lr, tokens_per_s, format_duration(eta).c_str());
    if (step == max_steps) std::fputc('\n', stderr);
  }
  if (!logged) return;
  if (!s_.live_progress)
    std::fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.2e  grad_norm %.3f  %.0f tok/s  eta %s\n",
                 static_cast<long long>(step), static_cast<long long>(max_steps), loss, lr, grad_norm, tokens_per_s,
                 format_duration(eta).c_str());
  if (record_)
    record_->append_metrics({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                             {"tokens", tokens_seen_}, {"tokens_per_s", tokens_per_s}, {"elapsed_s", elapsed}});
  last_log_time_ = now;
  last_log_tokens_ = tokens_seen_;
}

void Trainer::save_final_weights() {
  if (!record_) return;
  NamedTensors tensors;
  for (const auto& item : model_->named_parameters()) tensors.emplace_back(item.key(), item.value());
  save_safetensors(record_->dir() + "/model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace lmforge::trainer
