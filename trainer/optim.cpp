// trainer/optim.cpp -- parameter grouping, the warmup + decay schedule, gradient clipping, and
// AdamW's state as named tensors. The optimizer itself is torch::optim::AdamW.
#include "trainer/optim.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>

#include "core/config_reader.h"
#include "core/errors.h"
#include "core/host_sync.h"
#include "parallel/grad_sync.h"
#include "trainer/models/model.h"

namespace lmforge::trainer {

void read_optim_config(config::Section& s, OptimConfig& c) {
  using config::at_least;
  using config::between;
  s.field("lr", c.lr, config::greater_than(0));
  s.field("weight_decay", c.weight_decay, at_least(0));
  s.field("beta1", c.beta1, between(0, 0.999999));
  s.field("beta2", c.beta2, between(0, 0.999999));
  s.field("eps", c.eps, config::greater_than(0));
  s.field("grad_clip", c.grad_clip, at_least(0));
  s.field("decay_norms_and_biases", c.decay_norms_and_biases);
  s.field("decay_embeddings", c.decay_embeddings);
}

void read_schedule_config(config::Section& s, ScheduleConfig& c) {
  s.field("kind", c.kind, {"cosine", "linear", "constant"});
  s.field("warmup_steps", c.warmup_steps, config::at_least(0));
  s.field("min_lr_ratio", c.min_lr_ratio, config::between(0, 1));
}

double lr_at(int64_t step, int64_t max_steps, double peak_lr, const ScheduleConfig& c) {
  if (step < c.warmup_steps) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  if (c.kind == "constant") return peak_lr;
  double floor = peak_lr * c.min_lr_ratio;
  int64_t decay_steps = std::max<int64_t>(1, max_steps - c.warmup_steps - 1);
  double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / static_cast<double>(decay_steps));
  if (c.kind == "linear") return peak_lr - (peak_lr - floor) * progress;
  return floor + (peak_lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::unique_ptr<torch::optim::AdamW> make_optimizer(torch::nn::Module& model, const OptimConfig& c) {
  std::set<torch::TensorImpl*> embeddings;
  for (const auto& m : model.modules()) {
    if (auto* emb = m->as<torch::nn::EmbeddingImpl>()) embeddings.insert(emb->weight.unsafeGetTensorImpl());
    auto* layer = m->as<LayerImpl>();
    if (layer && layer->is_embedding()) {
      for (const auto& p : layer->parameters(false)) embeddings.insert(p.unsafeGetTensorImpl());
    }
  }
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model.parameters()) {
    if (!p.requires_grad()) continue;
    bool is_embedding = embeddings.count(p.unsafeGetTensorImpl()) > 0;
    bool is_norm_or_bias = p.dim() < 2;
    bool decays = is_embedding ? c.decay_embeddings : (is_norm_or_bias ? c.decay_norms_and_biases : true);
    (decays ? decay : no_decay).push_back(p);
  }
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(c.weight_decay));
  groups.emplace_back(no_decay, options(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(c.lr));
}

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

torch::Tensor clip_gradients(torch::nn::Module& model, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : model.parameters())
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return torch::zeros({}, torch::kDouble);
  std::vector<torch::Tensor> norms;
  for (const auto& g : grads) norms.push_back(g.detach().to(torch::kFloat).norm());
  auto total = torch::stack(norms).norm().to(torch::kDouble);  // fp32 norms, as torch.nn.utils does
  parallel::clip_to_norm(grads, total, max_norm);
  return total;
}

double clip_grad_norm(torch::nn::Module& model, double max_norm) {
  return read_to_host(clip_gradients(model, max_norm)).item<double>();
}

namespace {

// LibTorch 1.x keys optimizer state by the parameter's TensorImpl address printed as a string
// (what c10::guts::to_string, gone from 2.x headers, wrote: operator<< of the pointer), 2.x by the
// address itself; this gives the key either way, whichever release made the change.
template <typename StateMap>
typename StateMap::key_type state_key(const StateMap&, const torch::Tensor& p) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream address;
    address << p.unsafeGetTensorImpl();
    return address.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

}  // namespace

NamedParams optimizer_params(
    torch::optim::AdamW& opt, const std::function<std::string(const torch::Tensor&, size_t)>& name_of) {
  NamedParams out;
  for (auto& group : opt.param_groups())
    for (auto& p : group.params()) out.emplace_back(name_of(p, out.size()), p);
  return out;
}

NamedTensors adamw_state(torch::optim::AdamW& opt, const NamedParams& params) {
  NamedTensors out;
  auto& state = opt.state();
  for (const auto& [name, p] : params) {
    auto it = state.find(state_key(state, p));
    if (it == state.end()) continue;  // no step taken yet
    auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
    out.emplace_back(name + ".exp_avg", s.exp_avg().cpu());
    out.emplace_back(name + ".exp_avg_sq", s.exp_avg_sq().cpu());
    out.emplace_back(name + ".step", torch::tensor({s.step()}, torch::kLong));
  }
  return out;
}

void load_adamw_state(torch::optim::AdamW& opt, const NamedParams& params,
                      const NamedTensors& saved, const std::string& file) {
  std::map<std::string, torch::Tensor> by_name(saved.begin(), saved.end());
  auto& state = opt.state();
  std::vector<std::string> problems;
  for (const auto& [name, p] : params) {
    auto avg = by_name.find(name + ".exp_avg"), sq = by_name.find(name + ".exp_avg_sq"), st = by_name.find(name + ".step");
    if (avg == by_name.end() || sq == by_name.end() || st == by_name.end()) {
      problems.push_back(name + ": no optimizer state");
      continue;
    }
    if (avg->second.sizes() != p.sizes() || sq->second.sizes() != p.sizes()) {
      problems.push_back(name + ": optimizer state of shape " + c10::str(avg->second.sizes()) + ", parameter " +
                         c10::str(p.sizes()));
      continue;
    }
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(st->second.item<int64_t>());
    s->exp_avg(avg->second.to(p.device()).clone());
    s->exp_avg_sq(sq->second.to(p.device()).clone());
    state[state_key(state, p)] = std::move(s);
  }
  if (!problems.empty() && !saved.empty()) {
    std::string message = file + " does not fit this optimizer:";
    for (const auto& m : problems) message += "\n  " + m;
    throw InputError(message);
  }
}

}  // namespace lmforge::trainer
