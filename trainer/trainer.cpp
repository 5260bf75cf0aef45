// trainer/trainer.cpp -- Trainer::run and the pieces it calls once per step, and the state a
// checkpoint holds. Gradient sync is parallel/'s; the commit protocol is checkpoint.cpp's.
#include "trainer/trainer.h"

#include <ATen/autocast_mode.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "experiments/run_record.h"
#include "parallel/comm.h"
#include "parallel/grad_sync.h"
#include "parallel/grid.h"
#include "parallel/tensor_parallel.h"
#include "parallel/zero.h"
#include "core/config_reader.h"
#include "core/errors.h"
#include "core/log.h"
#include "trainer/lora.h"
#include "core/safetensors.h"

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
  s.field("device", c.device, {"auto", "cpu", "cuda"});
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
  bool received_on_any_rank(parallel::Comm& comm, const torch::Device& device) {
    auto flag = torch::tensor({static_cast<double>(g_stop_signal.load())}, torch::kDouble).to(device);
    comm.allreduce(flag, parallel::ReduceOp::max);
    return flag.item<double>() > 0;
  }

 private:
  struct sigaction old_term_ {}, old_usr1_ {};
};

// Rows [first, first + count) of a batch, on `device`.
data::Batch slice(const data::Batch& b, int64_t first, int64_t count, const torch::Device& device) {
  auto part = [&](const torch::Tensor& t) { return t.defined() ? t.narrow(0, first, count).to(device) : t; };
  return {part(b.inputs), part(b.targets), part(b.positions), part(b.segments)};
}

// The model's parameters as full tensors: gathered over tp (collective) when `tp` is set.
NamedTensors full_weights(CausalLMImpl& model, const parallel::TensorParallel* tp) {
  if (tp) return tp->full_parameters(model);
  NamedTensors weights;
  for (const auto& item : model.named_parameters()) weights.emplace_back(item.key(), item.value().detach().cpu());
  return weights;
}

std::string format_duration(double seconds) {
  int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}
}  // namespace

Trainer::Trainer(CausalLM model, TrainerSettings settings, data::WindowSampler train_data,
                 torch::Tensor eval_tokens, experiments::RunRecord* record, parallel::Comm& comm)
    : Trainer(model, settings, std::make_unique<data::WindowSampler>(std::move(train_data)),
              eval_tokens.defined() ? data::fixed_batches(eval_tokens, settings.train.seq_len,
                                                          settings.train.micro_batch_size, settings.eval.max_batches)
                                    : std::vector<data::Batch>{},
              record, comm) {}

Trainer::Trainer(CausalLM model, TrainerSettings settings, std::unique_ptr<data::BatchSource> train_data,
                 std::vector<data::Batch> eval_batches, experiments::RunRecord* record, parallel::Comm& comm)
    : model_(std::move(model)),
      device_(model_->parameters().front().device()),
      s_(std::move(settings)),
      train_data_(std::move(train_data)),
      eval_batches_(std::move(eval_batches)),
      record_(record),
      comm_(comm),
      dp_(s_.grid ? s_.grid->dp() : comm),
      grad_sync_(std::make_unique<parallel::GradSync>(*model_, dp_, s_.bucket_mb)),
      optimizer_(make_optimizer(*model_, s_.optim)) {
  grad_sync_->broadcast_parameters();
  if (s_.zero) zero_ = std::make_unique<parallel::ZeroOptimizer>(*optimizer_, dp_);
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
    double loss = train_step();
    double grad_norm = sync_and_clip();
    if (!std::isfinite(loss) || !std::isfinite(grad_norm))
      throw TrainingError("step " + std::to_string(step_ + 1) + ": loss " + std::to_string(loss) +
                          ", gradient norm " + std::to_string(grad_norm) +
                          ": not finite, stopping before the update (try a lower optim.lr or check the data)");
    apply_update(lr);
    ++step_;
    losses_.push_back(loss);
    log_step(step_, loss, grad_norm, lr);
    if (step_ == max_steps || (s_.train.eval_every > 0 && step_ % s_.train.eval_every == 0)) {
      if (!eval_batches_.empty()) log_eval(evaluate());
      if (s_.on_eval) s_.on_eval(step_);
    }
    if (signals.received_on_any_rank(comm_, device_)) {
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
  if (record_)
    record_->append_metrics({{"step", step_}, {"eval_loss", r.loss}, {"eval_ppl", r.perplexity}, {"eval_tokens", r.tokens}});
}

double Trainer::train_step() {
  model_->train();
  optimizer_->zero_grad();
  const int64_t accum = s_.train.grad_accum_steps, micro_batch = s_.train.micro_batch_size;
  const int64_t rows = micro_batch * accum;  // this rank's slice of the global batch
  data::Batch mine = train_data_->next(rows * dp_.size(), dp_.rank() * rows, rows);  // (B x accum, T)
  double loss_sum = 0;
  for (int64_t micro = 0; micro < accum; ++micro) {
    data::Batch b = slice(mine, micro * micro_batch, micro_batch, device_);
    torch::Tensor loss;
    {
      Autocast autocast(s_.train.precision == "bf16", device_.type());
      loss = loss_of(model_->forward(b.inputs, b.positions, b.segments), b.targets);
    }
    grad_sync_->begin_backward(/*sync=*/!zero_ && micro == accum - 1);  // ZeRO reduce-scatters instead
    (loss / static_cast<double>(accum)).backward();
    loss_sum += loss.item<double>();
  }
  grad_sync_->finish();
  tokens_seen_ += mine.inputs.numel() * dp_.size();
  auto mean_loss = torch::tensor({loss_sum / static_cast<double>(accum)}, torch::kDouble).to(device_);
  comm_.allreduce(mean_loss, parallel::ReduceOp::avg);  // a NaN on any rank reaches every rank
  return mean_loss.item<double>();
}

// Under tp the logits are this rank's vocab slice: the loss is the vocab-parallel one.
torch::Tensor Trainer::loss_of(const torch::Tensor& logits, const torch::Tensor& targets) {
  return s_.tp ? parallel::vocab_parallel_cross_entropy(logits, targets, s_.tp->comm()) : causal_lm_loss(logits, targets);
}

double Trainer::sync_and_clip() {
  if (zero_) return zero_->reduce_gradients_and_clip(s_.optim.grad_clip);
  if (!s_.tp) return clip_grad_norm(*model_, s_.optim.grad_clip);  // grad_sync_ already averaged the gradients
  s_.tp->average_replicated_gradients(*model_);
  return s_.tp->clip_grad_norm(*model_, s_.optim.grad_clip);
}

void Trainer::apply_update(double lr) {
  if (zero_) {
    set_lr(zero_->optimizer(), lr);
    zero_->step();
  } else {
    set_lr(*optimizer_, lr);
    optimizer_->step();
  }
}

EvalResult Trainer::evaluate() {
  torch::NoGradGuard no_grad;
  model_->eval();
  double local[2] = {0, 0};  // [loss x tokens, tokens] over this rank's batches
  for (size_t i = dp_.rank(); i < eval_batches_.size(); i += dp_.size()) {
    Autocast autocast(s_.train.precision == "bf16", device_.type());
    data::Batch b = slice(eval_batches_[i], 0, eval_batches_[i].inputs.size(0), device_);
    double counted = static_cast<double>((b.targets != -100).sum().item<int64_t>());
    double loss = loss_of(model_->forward(b.inputs, b.positions, b.segments), b.targets).item<double>();
    if (counted == 0) continue;
    local[0] += loss * counted;
    local[1] += counted;
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
  if (record_)
    record_->append_metrics({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                             {"tokens", tokens_seen_}, {"tokens_per_s", tokens_per_s}, {"elapsed_s", elapsed}});
  last_log_time_ = now;
  last_log_tokens_ = tokens_seen_;
}

std::string Trainer::save_checkpoint() {
  CheckpointFiles files;
  const std::string rank = std::to_string(comm_.rank());
  if (comm_.rank() == 0 || s_.tp) {  // under tp every rank takes part in gathering the full tensors
    NamedTensors weights = weights_to_save();
    NamedTensors moments = zero_ ? NamedTensors{} : full_tensors(adamw_state(*optimizer_, named_optimizer_params()));
    if (comm_.rank() == 0) {
      files.tensors["model.safetensors"] = std::move(weights);
      if (!zero_) files.tensors["optimizer.safetensors"] = std::move(moments);
    }
  }
  if (comm_.rank() == 0) {
    if (!s_.base_reference.empty()) files.texts["base.json"] = s_.base_reference + "\n";
    nlohmann::json state = {{"step", step_}, {"tokens_seen", tokens_seen_}, {"sampler", train_data_->state()},
                            {"world_size", comm_.size()}, {"zero", s_.zero},
                            {"tp", s_.tp ? s_.tp->comm().size() : 1}};
    files.texts["trainer_state.json"] = state.dump(2) + "\n";
  }
  if (zero_) files.tensors["optimizer.rank_" + rank + ".safetensors"] = adamw_state(zero_->optimizer(), zero_params());
  files.tensors["rng.rank_" + rank + ".safetensors"] = {{"torch_cpu", at::detail::getDefaultCPUGenerator().get_state()}};
  auto t = std::chrono::steady_clock::now();
  std::string dir = commit_checkpoint(s_.run_dir + "/checkpoints", step_, files, s_.lineage, s_.checkpoint, comm_);
  log::line("saved " + dir + " in " +
                std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count()) + " s",
            comm_.rank() == 0);
  return dir;
}

void Trainer::load_checkpoint(const std::string& dir) {
  std::ifstream state_in(dir + "/trainer_state.json");
  auto state = nlohmann::json::parse(state_in);
  if (state.at("zero").get<bool>() != s_.zero || (s_.zero && state.at("world_size").get<int>() != comm_.size()))
    throw InputError(dir + " was saved with parallel.zero " + std::string(state.at("zero").get<bool>() ? "1" : "0") +
                     " on " + std::to_string(state.at("world_size").get<int>()) +
                     " ranks; ZeRO-1 optimizer shards resume only with the same setting and number of ranks");
  load_weights(dir);
  const std::string rank = std::to_string(comm_.rank());
  if (zero_) {
    std::string file = dir + "/optimizer.rank_" + rank + ".safetensors";
    load_adamw_state(zero_->optimizer(), zero_params(), load_safetensors(file), file);
  } else {
    std::string file = dir + "/optimizer.safetensors";
    load_adamw_state(*optimizer_, named_optimizer_params(), local_tensors(load_safetensors(file)), file);
  }
  // A rank that did not exist when the checkpoint was saved takes rank 0's generator.
  std::string rng_file = dir + "/rng.rank_" + rank + ".safetensors";
  if (!std::ifstream(rng_file)) rng_file = dir + "/rng.rank_0.safetensors";
  for (const auto& [name, t] : load_safetensors(rng_file))
    if (name == "torch_cpu") {
      at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle: shares the global state
      generator.set_state(t);
    }
  step_ = state.at("step").get<int64_t>();
  tokens_seen_ = state.at("tokens_seen").get<int64_t>();
  train_data_->restore(state.at("sampler").get<std::string>());
}

void Trainer::load_weights(const std::string& dir) {
  if (!s_.base_reference.empty()) {
    std::ifstream base_in(dir + "/base.json");
    if (!base_in) throw InputError(dir + " holds no base.json: it is not a checkpoint of a LoRA run");
    auto saved_base = nlohmann::json::parse(base_in);  // by content: a seeded base saved again is the same base
    if (saved_base.at("files") != nlohmann::json::parse(s_.base_reference).at("files"))
      throw InputError(dir + " adapts the base model saved at " + saved_base.at("path").get<std::string>() +
                       ", whose weights differ (SHA-256) from the configured base");
    load_trainable_tensors(*model_, local_tensors(load_safetensors(dir + "/model.safetensors")), dir + "/model.safetensors");
    return;
  }
  auto saved = local_tensors(load_safetensors(dir + "/model.safetensors"));
  std::map<std::string, torch::Tensor> by_name(saved.begin(), saved.end());
  std::vector<std::string> problems;
  auto params = model_->named_parameters();
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
  {
    torch::NoGradGuard no_grad;
    for (auto& item : params) item.value().copy_(by_name[item.key()]);
  }
}

NamedTensors Trainer::weights_to_save() {
  if (!s_.base_reference.empty()) return full_tensors(trainable_tensors(*model_));  // collective under tp
  return full_weights(*model_, s_.tp.get());  // collective under tp
}

NamedParams Trainer::named_optimizer_params() {
  std::map<torch::TensorImpl*, std::string> names;
  for (const auto& item : model_->named_parameters()) names[item.value().unsafeGetTensorImpl()] = item.key();
  return optimizer_params(*optimizer_, [&](const torch::Tensor& p, size_t) { return names.at(p.unsafeGetTensorImpl()); });
}

NamedParams Trainer::zero_params() {
  return optimizer_params(zero_->optimizer(), [](const torch::Tensor&, size_t i) { return "shard_group" + std::to_string(i); });
}

void Trainer::save_final_weights() {
  if (!record_ && !s_.tp) return;
  NamedTensors tensors = weights_to_save();
  if (record_) save_safetensors(record_->dir() + "/model.safetensors", tensors, {{"format", "pt"}});
}


NamedTensors Trainer::full_tensors(const NamedTensors& local) { return s_.tp ? s_.tp->gather(local, device_) : local; }

NamedTensors Trainer::local_tensors(const NamedTensors& full) {
  if (!s_.tp) return full;
  NamedTensors local;
  for (const auto& [name, t] : full) local.emplace_back(name, s_.tp->shard(name, t));
  return local;
}

}  // namespace lmforge::trainer
