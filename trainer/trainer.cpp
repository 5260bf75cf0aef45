// trainer/trainer.cpp -- Trainer::run and the pieces it calls once per step, and the components a
// checkpoint holds. Gradient reduction is the strategy's; the commit protocol is checkpoint.cpp's.

#include "trainer/trainer.h"

#include <ATen/autocast_mode.h>

#include <array>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/config_reader.h"
#include "core/errors.h"
#include "core/host_sync.h"
#include "core/log.h"
#include "core/run_dir.h"
#include "core/safetensors.h"
#include "parallel/comm.h"
#include "parallel/grid.h"
#include "parallel/launcher.h"
#include "trainer/metrics_sink.h"
#include "trainer/peft/apply.h"
#include "trainer/strategy.h"


namespace lmforge::trainer {

void read_train_config(config::Section& s, TrainConfig& c) {
  using config::at_least;
  s.field("max_steps", c.max_steps, at_least(1), config::Need::required);
  s.field("micro_batch_size", c.micro_batch_size, at_least(1));
  s.field("grad_accum_steps", c.grad_accum_steps, at_least(1));
  s.field("seq_len", c.seq_len, at_least(1));
  s.field("log_every", c.log_every, at_least(1));
  s.field("eval_every", c.eval_every, at_least(0));
  s.choice("precision", c.precision, {{"fp32", Precision::fp32}, {"bf16", Precision::bf16}});
  s.choice("device", c.device, parallel::device_requests());
}

void read_eval_config(config::Section& s, EvalConfig& c) {
  s.field("max_batches", c.max_batches, config::at_least(1));
}

// LibTorch 2.4 replaced the per-device autocast setters with ones taking the device type.
Autocast::Autocast(bool enabled, torch::DeviceType device) : enabled_(enabled), device_(device) {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::set_autocast_dtype(device_, at::kBFloat16);
#else
  if (device_ == torch::kCUDA) {
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  } else {
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
#endif
}

Autocast::~Autocast() {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(device_, false);
#else
  if (device_ == torch::kCUDA) {
    at::autocast::set_enabled(false);
  } else {
    at::autocast::set_cpu_enabled(false);
  }
#endif
  at::autocast::clear_cache();  // the next forward must see the weights the optimizer updated
}

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int signo) { g_stop_signal.store(signo); }

// While alive, SIGTERM and SIGUSR1 only set a flag (a second one during a save changes nothing);
// at each step boundary the ranks agree whether any of them got one.
class PreemptionSignals {
 public:
  PreemptionSignals() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, &old_term_);
    sigaction(SIGUSR1, &action, &old_usr1_);
  }
  ~PreemptionSignals() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGUSR1, &old_usr1_, nullptr);
  }
  bool received_on_any_rank(parallel::Comm& host) {
    auto flag = torch::tensor({static_cast<double>(g_stop_signal.load())}, torch::kDouble);
    host.allreduce(flag, parallel::ReduceOp::max);
    return flag.item<double>() > 0;
  }

 private:
  struct sigaction old_term_ {}, old_usr1_ {};
};

// Rows [first, first + count) of a batch, on `device`: to a GPU from pinned memory, without
// waiting (the copy is ordered on the stream before the forward that reads it).
data::Batch slice(const data::Batch& b, int64_t first, int64_t count, const torch::Device& device) {
  auto part = [&](const torch::Tensor& t) {
    if (!t.defined()) return t;
    auto rows = t.narrow(0, first, count);
    if (!device.is_cuda()) return rows;
    return rows.contiguous().pin_memory().to(device, /*non_blocking=*/true);
  };
  return {part(b.inputs), part(b.targets), part(b.positions), part(b.segments)};
}

std::string format_duration(double seconds) {
  int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

// --------------------------------------------------------------------- checkpoint components

// Where the sampler is in its epoch order.
class SamplerState : public CheckpointComponent {
 public:
  explicit SamplerState(data::BatchSource& source) : source_(source) {}
  void save(CheckpointState& out) override { out.trainer_state["sampler"] = source_.state(); }
  void load(const std::string&, const nlohmann::json& state) override { source_.restore(state.at("sampler").get<std::string>()); }

 private:
  data::BatchSource& source_;
};

// Every generator a rank draws from (dropout masks): the CPU one, and its CUDA device's when it
// trains on one (LoRA and tensor-parallel dropout draw there), one file per rank. A rank that did
// not exist when the checkpoint was saved takes rank 0's generators.
class GeneratorState : public CheckpointComponent {
 public:
  GeneratorState(int rank, torch::Device device) : rank_(rank), device_(device) {}
  void save(CheckpointState& out) override {
    NamedTensors states = {{"torch_cpu", at::detail::getDefaultCPUGenerator().get_state()}};
    if (device_.is_cuda()) states.emplace_back("torch_cuda", device_generator().get_state());
    out.files.tensors[checkpoint_file::rng(out.rank)] = std::move(states);
  }
  void load(const std::string& dir, const nlohmann::json&) override {
    std::string file = dir + "/" + checkpoint_file::rng(rank_);
    if (!std::ifstream(file)) file = dir + "/" + checkpoint_file::rng(0);
    for (const auto& [name, t] : load_safetensors(file)) {
      if (name == "torch_cpu") {
        at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle: shares the global state
        generator.set_state(t);
      } else if (name == "torch_cuda" && device_.is_cuda()) {
        device_generator().set_state(t);
      }
    }
  }

 private:
  at::Generator device_generator() const { return at::globalContext().defaultGenerator(device_); }
  int rank_;
  torch::Device device_;
};

// The step and token counters.
class Counters : public CheckpointComponent {
 public:
  Counters(int64_t& step, int64_t& tokens) : step_(step), tokens_(tokens) {}
  void save(CheckpointState& out) override {
    out.trainer_state["step"] = step_;
    out.trainer_state["tokens_seen"] = tokens_;
  }
  void load(const std::string&, const nlohmann::json& state) override {
    step_ = state.at("step").get<int64_t>();
    tokens_ = state.at("tokens_seen").get<int64_t>();
  }

 private:
  int64_t& step_;
  int64_t& tokens_;
};

}  // namespace

// A batch source that can draw the next step's rows early: while this step's backward runs on the
// device, the host reads the shards instead of idling at the step's end. state() is the source's
// before that draw, so a checkpoint resumes with the rows the next step trains on.
class PrefetchingSource : public data::BatchSource {
 public:
  explicit PrefetchingSource(std::unique_ptr<data::BatchSource> inner) : inner_(std::move(inner)) {}
  void prefetch(int64_t global_rows, int64_t first, int64_t count) {
    cancel();
    state_before_ = inner_->state();
    ahead_ = inner_->next(global_rows, first, count);
    ahead_rows_ = {global_rows, first, count};
    holding_ = true;
  }
  data::Batch next(int64_t global_rows, int64_t first, int64_t count) override {
    if (holding_ && ahead_rows_ == std::array<int64_t, 3>{global_rows, first, count}) {
      holding_ = false;
      return std::move(ahead_);
    }
    cancel();
    return inner_->next(global_rows, first, count);
  }
  std::string state() const override { return holding_ ? state_before_ : inner_->state(); }
  void restore(const std::string& state) override {
    holding_ = false;
    inner_->restore(state);
  }

 private:
  void cancel() {  // a prefetched batch nobody took: the source goes back to before it
    if (holding_) inner_->restore(state_before_);
    holding_ = false;
  }
  std::unique_ptr<data::BatchSource> inner_;
  data::Batch ahead_;
  std::array<int64_t, 3> ahead_rows_{};
  std::string state_before_;
  bool holding_ = false;
};

// The model's weights: every parameter, or a LoRA run's trainable ones next to base.json, the
// frozen base they adapt (checked by content on load). Full tensors whatever tp is.
class WeightsState : public CheckpointComponent {
 public:
  WeightsState(CausalLMImpl& model, Strategy& strategy, std::string base_reference)
      : model_(model), strategy_(strategy), base_reference_(std::move(base_reference)) {}
  NamedTensors full() {  // collective under tp
    if (!base_reference_.empty()) return strategy_.full(trainable_tensors(model_));
    NamedTensors weights;
    for (const auto& item : model_.named_parameters()) weights.emplace_back(item.key(), item.value().detach());
    return strategy_.gathers_on_save() ? strategy_.full(weights) : cpu(weights);
  }
  void save(CheckpointState& out) override {
    if (out.rank != 0 && !strategy_.gathers_on_save()) return;
    NamedTensors weights = full();
    if (out.rank != 0) return;
    out.files.tensors[checkpoint_file::kModel] = std::move(weights);
    if (!base_reference_.empty()) out.files.texts[checkpoint_file::kBase] = base_reference_ + "\n";
  }
  void load(const std::string& dir, const nlohmann::json&) override {
    const std::string file = dir + "/" + checkpoint_file::kModel;
    if (!base_reference_.empty()) {
      std::ifstream base_in(dir + "/" + checkpoint_file::kBase);
      if (!base_in) throw InputError(dir + " holds no base.json: it is not a checkpoint of a LoRA run");
      auto saved_base = nlohmann::json::parse(base_in);  // by content: a seeded base saved again is the same base
      if (saved_base.at("files") != nlohmann::json::parse(base_reference_).at("files"))
        throw InputError(dir + " adapts the base model saved at " + saved_base.at("path").get<std::string>() +
                         ", whose weights differ (SHA-256) from the configured base");
      load_trainable_tensors(model_, strategy_.local(load_safetensors(file)), file);
      return;
    }
    load_all(dir, strategy_.local(load_safetensors(file)));
  }

 private:
  static NamedTensors cpu(NamedTensors tensors) {
    for (auto& [name, t] : tensors) t = t.cpu();
    return tensors;
  }
  void load_all(const std::string& dir, const NamedTensors& saved) {
    std::map<std::string, torch::Tensor> by_name(saved.begin(), saved.end());
    std::vector<std::string> problems;
    auto params = model_.named_parameters();
    for (const auto& item : params) {
      auto it = by_name.find(item.key());
      if (it == by_name.end()) {
        problems.push_back("missing: " + item.key());
      } else if (it->second.sizes() != item.value().sizes()) {
        problems.push_back("shape: " + item.key() + " is " + c10::str(it->second.sizes()) + " in the checkpoint, " +
                           c10::str(item.value().sizes()) + " in this model");
      }
    }
    for (const auto& [name, t] : saved)
      if (!params.contains(name)) problems.push_back("unexpected: " + name);
    if (!problems.empty()) {
      std::string message = dir + "/model.safetensors does not fit the configured model:";
      for (const auto& p : problems) message += "\n  " + p;
      throw InputError(message);
    }
    torch::NoGradGuard no_grad;
    for (auto& item : params) item.value().copy_(by_name[item.key()]);
  }
  CausalLMImpl& model_;
  Strategy& strategy_;
  std::string base_reference_;  // empty: a full run
};

Trainer::Trainer(CausalLM model, TrainerSettings settings, data::WindowSampler train_data,
                 torch::Tensor eval_tokens, MetricsSink* metrics, parallel::Comm& comm)
    : Trainer(model, settings, std::make_unique<data::WindowSampler>(std::move(train_data)),
              eval_tokens.defined() ? data::fixed_batches(eval_tokens, settings.train.seq_len,
                                                          settings.train.micro_batch_size, settings.eval.max_batches)
                                    : std::vector<data::Batch>{},
              metrics, comm) {}

Trainer::Trainer(CausalLM model, TrainerSettings settings, std::unique_ptr<data::BatchSource> train_data,
                 std::vector<data::Batch> eval_batches, MetricsSink* metrics, parallel::Comm& comm)
    : model_(std::move(model)),
      device_(model_->parameters().front().device()),
      s_(std::move(settings)),
      train_data_(std::make_unique<PrefetchingSource>(std::move(train_data))),
      eval_batches_(std::move(eval_batches)),
      metrics_(metrics),
      comm_(comm),
      control_(s_.control ? *s_.control : comm),
      dp_(s_.grid ? s_.grid->dp() : comm) {
  strategy_ = make_strategy(*model_, {s_.optim, s_.bucket_mb, s_.zero, s_.grid, s_.tp}, comm_);
  auto weights = std::make_unique<WeightsState>(*model_, *strategy_, s_.base_reference);
  weights_ = weights.get();
  state_.push_back(std::move(weights));
  state_.push_back(std::make_unique<SamplerState>(*train_data_));
  state_.push_back(std::make_unique<GeneratorState>(comm_.rank(), device_));
  state_.push_back(std::make_unique<Counters>(step_, tokens_seen_));
}

Trainer::~Trainer() = default;

void Trainer::run() {
  const int64_t max_steps = s_.train.max_steps;
  PreemptionSignals signals;
  start_ = last_log_time_ = std::chrono::steady_clock::now();
  start_step_ = step_;
  last_log_tokens_ = tokens_seen_;
  while (step_ < max_steps) {
    double lr = lr_at(step_, max_steps, s_.optim.lr, s_.schedule);
    StepSums sums = train_step();
    auto [loss, grad_norm, targets] = step_scalars(sums, strategy_->reduce_and_clip(s_.optim.grad_clip));
    if (!std::isfinite(loss) || !std::isfinite(grad_norm))
      throw TrainingError("step " + std::to_string(step_ + 1) + ": loss " + std::to_string(loss) +
                          ", gradient norm " + std::to_string(grad_norm) +
                          ": not finite, stopping before the update (try a lower optim.lr or check the data)");
    if (targets > 0) {
      strategy_->step(lr);
    } else {
      log::line("warning: step " + std::to_string(step_ + 1) +
                    ": the global batch has no target tokens (every row is prompt or padding); skipped, no update",
                comm_.rank() == 0);
    }
    ++step_;
    if (targets > 0) losses_.push_back(loss);
    log_step(step_, loss, grad_norm, lr);
    if (step_ == max_steps || (s_.train.eval_every > 0 && step_ % s_.train.eval_every == 0)) {
      if (!eval_batches_.empty()) log_eval(evaluate());
      if (s_.on_eval) s_.on_eval(step_);
    }
    if (signals.received_on_any_rank(control_)) {
      std::string saved = save_checkpoint();
      throw Preempted("stopped by a signal at step " + std::to_string(step_) + "; saved " + saved);
    }
    if (s_.checkpoint.every_steps > 0 && step_ % s_.checkpoint.every_steps == 0 && step_ < max_steps)
      save_checkpoint();
  }
  if (s_.checkpoint.save_final) {
    save_final_weights();
    if (!s_.run_dir.empty()) save_checkpoint();
  }
}

void Trainer::log_eval(const EvalResult& r) {
  char text[128];
  std::snprintf(text, sizeof text, "%seval step %lld: loss %.4f  perplexity %.2f", s_.live_progress ? "\n" : "",
                static_cast<long long>(step_), r.loss, r.perplexity);
  log::line(text, comm_.rank() == 0);
  if (metrics_)
    metrics_->append_metrics({{"step", step_}, {"eval_loss", r.loss}, {"eval_ppl", r.perplexity}, {"eval_tokens", r.tokens}});
}

Trainer::StepScalars Trainer::step_scalars(const StepSums& sums, const torch::Tensor& grad_norm) {
  auto device = sums.loss_sum.device();
  auto scalars = read_to_host(torch::stack({sums.loss_sum.reshape({}), grad_norm.to(device).reshape({}),
                                            sums.targets.to(device).reshape({})}));  // the step's one read
  const double targets = scalars[2].item<double>();
  // This rank's share of the global loss; the shares summed over dp are the token-weighted mean.
  // The host communicator spans every rank and tp ranks hold equal shares: its average times dp.
  auto share = torch::tensor({scalars[0].item<double>() / std::max(targets, 1.0)}, torch::kDouble);
  control_.allreduce(share, parallel::ReduceOp::avg);  // a NaN on any rank reaches every rank
  return {share.item<double>() * static_cast<double>(dp_.size()), scalars[1].item<double>(),
          static_cast<int64_t>(targets)};
}

// The step's loss is the sum of the token losses over the global batch (every micro-batch on
// every dp rank) over its number of targets, so the split into micro-batches and ranks does not
// change it and a micro-batch without targets adds nothing. The count is known before backward:
// one allreduce of this rank's count. Each micro-batch's sum is scaled by dp / count, since
// gradient sync averages over dp.
Trainer::StepSums Trainer::train_step() {
  model_->train();
  strategy_->zero_grad();
  const int64_t accum = s_.train.grad_accum_steps, micro_batch = s_.train.micro_batch_size;
  const int64_t rows = micro_batch * accum;  // this rank's slice of the global batch
  const bool bf16 = s_.train.precision == Precision::bf16;
  data::Batch mine = train_data_->next(rows * dp_.size(), dp_.rank() * rows, rows);  // (B x accum, T)
  torch::Tensor targets = mine.targets.ne(-100).sum().to(torch::kDouble).reshape({1}).to(device_);
  if (dp_.size() > 1) dp_.allreduce(targets, parallel::ReduceOp::sum);
  torch::Tensor scale = (static_cast<double>(dp_.size()) / targets.clamp_min(1)).to(torch::kFloat).reshape({});
  torch::Tensor loss_sum = torch::zeros({}, torch::dtype(torch::kDouble).device(device_));  // summed on the device
  data::Batch ahead = slice(mine, 0, micro_batch, device_);
  for (int64_t micro = 0; micro < accum; ++micro) {
    data::Batch b = std::move(ahead);  // its copy was posted before the previous forward
    if (micro + 1 < accum) ahead = slice(mine, (micro + 1) * micro_batch, micro_batch, device_);
    torch::Tensor loss;
    {
      Autocast autocast(bf16, device_.type());
      loss = strategy_->loss(model_->forward(b.inputs, b.positions, b.segments), b.targets);
    }
    strategy_->begin_backward(/*last=*/micro == accum - 1);
    (loss * scale).backward();
    loss_sum += loss.detach().to(torch::kDouble);
  }
  if (step_ + 1 < s_.train.max_steps) train_data_->prefetch(rows * dp_.size(), dp_.rank() * rows, rows);
  strategy_->finish_backward();
  tokens_seen_ += mine.inputs.numel() * dp_.size();
  return {loss_sum, targets};
}

EvalResult Trainer::evaluate() {
  torch::NoGradGuard no_grad;
  model_->eval();
  double local[2] = {0, 0};  // [loss x tokens, tokens] over this rank's batches
  for (size_t i = dp_.rank(); i < eval_batches_.size(); i += dp_.size()) {
    Autocast autocast(s_.train.precision == Precision::bf16, device_.type());
    data::Batch b = slice(eval_batches_[i], 0, eval_batches_[i].inputs.size(0), device_);
    local[0] += strategy_->loss(model_->forward(b.inputs, b.positions, b.segments), b.targets).item<double>();
    local[1] += static_cast<double>(b.targets.ne(-100).sum().item<int64_t>());
  }
  auto sums = torch::tensor({local[0], local[1]}, torch::kDouble).to(device_);
  dp_.allreduce(sums, parallel::ReduceOp::sum);
  sums = sums.cpu();
  EvalResult r;
  r.tokens = static_cast<int64_t>(sums[1].item<double>());
  r.loss = r.tokens > 0 ? sums[0].item<double>() / static_cast<double>(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

void Trainer::log_step(int64_t step, double loss, double grad_norm, double lr) {
  const bool console = comm_.rank() == 0;
  const int64_t max_steps = s_.train.max_steps;
  bool logged = step == start_step_ + 1 || step % s_.train.log_every == 0 || step == max_steps;
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double eta = elapsed / static_cast<double>(step - start_step_) * static_cast<double>(max_steps - step);
  double window = std::chrono::duration<double>(now - last_log_time_).count();
  double tokens_per_s = window > 0 ? static_cast<double>(tokens_seen_ - last_log_tokens_) / window : 0.0;
  if (s_.live_progress && console) {
    std::fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  eta %s   ", static_cast<long long>(step),
                 static_cast<long long>(max_steps), loss, lr, tokens_per_s, format_duration(eta).c_str());
    if (step == max_steps) std::fputc('\n', stderr);
  }
  if (!logged) return;
  char text[160];
  std::snprintf(text, sizeof text, "step %lld/%lld  loss %.4f  lr %.2e  grad_norm %.3f  %.0f tok/s  eta %s",
                static_cast<long long>(step), static_cast<long long>(max_steps), loss, lr, grad_norm, tokens_per_s,
                format_duration(eta).c_str());
  log::line(text, console && !s_.live_progress);
  if (metrics_)
    metrics_->append_metrics({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                             {"tokens", tokens_seen_}, {"tokens_per_s", tokens_per_s}, {"elapsed_s", elapsed}});
  last_log_time_ = now;
  last_log_tokens_ = tokens_seen_;
}

std::string Trainer::save_checkpoint() {
  CheckpointState out;
  out.rank = comm_.rank();
  strategy_->save(out);
  for (auto& part : state_) part->save(out);
  if (out.rank == 0) out.files.texts[checkpoint_file::kTrainerState] = out.trainer_state.dump(2) + "\n";
  auto t = std::chrono::steady_clock::now();
  std::string dir = commit_checkpoint(RunDir{s_.run_dir}.checkpoints(), step_, out.files, s_.lineage, s_.checkpoint, control_);
  log::line("saved " + dir + " in " +
                std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count()) + " s",
            comm_.rank() == 0);
  return dir;
}

void Trainer::load_checkpoint(const std::string& dir) {
  std::ifstream state_in(dir + "/" + checkpoint_file::kTrainerState);
  auto state = nlohmann::json::parse(state_in);
  strategy_->check_resumable(dir, state);
  weights_->load(dir, state);  // the weights first: a model that does not fit is the error to report
  strategy_->load(dir, state);
  for (auto& part : state_)
    if (part.get() != weights_) part->load(dir, state);
}

void Trainer::save_final_weights() {
  if (!metrics_ && !strategy_->gathers_on_save()) return;
  NamedTensors tensors = weights_->full();  // collective under tp
  if (metrics_ && !s_.run_dir.empty()) save_safetensors(RunDir{s_.run_dir}.final_weights(), tensors, {{"format", "pt"}});
}

}  // namespace lmforge::trainer
