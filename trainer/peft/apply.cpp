// trainer/peft/apply.cpp -- selecting targets, swapping in LoRA layers, freezing, merging and the
// trainable tensors. The PEFT file format is adapter_dir.cpp's.
#include "trainer/peft/apply.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/errors.h"
#include "core/files.h"
#include "trainer/models/family.h"
#include "trainer/peft/lora_layer.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {


std::string join(const std::vector<std::string>& items, const std::string& sep = ", ") {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : sep) + item;
  return out;
}

// "q_proj, k_proj, ... (e.g. model.layers.0.self_attn.q_proj)": the linear modules a target may name.
std::string linear_modules_text(const std::vector<std::string>& linears) {
  std::vector<std::string> kinds;
  for (const auto& name : linears)
    if (std::find(kinds.begin(), kinds.end(), last_component(name)) == kinds.end()) kinds.push_back(last_component(name));
  return join(kinds) + (linears.empty() ? "" : " (e.g. " + linears.front() + ")");
}

bool is_linear(const Layer& layer) { return dynamic_cast<DenseLinearImpl*>(layer.get()) != nullptr; }

// The qualified names of the linears `cfg.targets` selects; InputError naming peft.targets otherwise.
std::vector<std::string> select_targets(const std::vector<std::pair<std::string, Layer>>& layers,
                                        const PeftConfig& cfg, const Family& family) {
  std::vector<std::string> linears;
  for (const auto& [name, layer] : layers)
    if (is_linear(layer)) linears.push_back(name);
  std::vector<std::string> targets = cfg.targets;
  if (targets.empty()) targets = family.lora_targets;  // PEFT's defaults for the family
  const std::string known = "; the model's linear modules: " + linear_modules_text(linears);
  std::vector<std::string> chosen;
  if (targets.size() == 1 && targets[0] == kAllLinearTargets) {
    for (const auto& name : linears)
      if (last_component(name) != "lm_head") chosen.push_back(name);
  } else if (targets_are_regex(targets)) {
    std::regex re(targets[0]);
    for (const auto& name : linears)
      if (std::regex_match(name, re)) chosen.push_back(name);
    if (chosen.empty()) throw InputError("peft.targets: the regex '" + targets[0] + "' matches no linear module" + known);
  } else {
    for (const auto& target : targets) {
      bool found = false;
      for (const auto& [name, layer] : layers) {
        if (!suffix_match(name, target)) continue;
        if (!is_linear(layer))
          throw InputError("peft.targets: '" + target + "' names " + name + ", which is not a linear layer" + known);
        found = true;
        if (std::find(chosen.begin(), chosen.end(), name) == chosen.end()) chosen.push_back(name);
      }
      if (!found) throw InputError("peft.targets: '" + target + "' matches no module" + known);
    }
  }
  return chosen;
}

// Unfreezes the layers modules_to_save names; InputError for a name that matches nothing usable.
void unfreeze_modules_to_save(const std::vector<std::pair<std::string, Layer>>& layers, const PeftConfig& cfg) {
  for (const auto& wanted : cfg.modules_to_save) {
    bool found = false;
    for (const auto& [name, layer] : layers) {
      if (!suffix_match(name, wanted)) continue;
      found = true;
      if (dynamic_cast<LoraLinearImpl*>(layer.get()))
        throw InputError("peft.modules_to_save: " + name + " is also a LoRA target; train it one way");
      auto params = layer->parameters();
      if (params.empty())
        throw InputError("peft.modules_to_save: " + name +
                         " holds no parameter of its own (a head tied to the embedding); name the embedding instead");
      for (auto& p : params) p.set_requires_grad(true);
    }
    if (!found) {
      std::vector<std::string> names;
      for (const auto& item : layers) names.push_back(item.first);
      throw InputError("peft.modules_to_save: '" + wanted + "' matches no layer; the model's layers: " + join(names));
    }
  }
}

int64_t count(const std::vector<torch::Tensor>& params, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : params)
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

}  // namespace

std::string last_component(const std::string& name) { return name.substr(name.rfind('.') + 1); }

bool suffix_match(const std::string& name, const std::string& suffix) {
  return name == suffix || ends_with(name, "." + suffix);
}

// A regex that selects exactly `names` when the suffix list would select more (PEFT full-matches a string).
json target_modules_json(CausalLMImpl& model, const std::vector<std::string>& adapted) {
  std::set<std::string> kinds;
  for (const auto& name : adapted) kinds.insert(last_component(name));
  size_t same_kind = 0;
  for (const auto& [name, layer] : named_layers(model))
    if (kinds.count(last_component(name))) ++same_kind;
  if (same_kind == adapted.size()) return std::vector<std::string>(kinds.begin(), kinds.end());
  std::vector<std::string> escaped;
  for (const auto& name : adapted) escaped.push_back(std::regex_replace(name, std::regex(R"(\.)"), R"(\.)"));
  return "(" + join(escaped, "|") + ")";
}

LoraSummary apply_lora(CausalLMImpl& model, const PeftConfig& cfg) {
  auto layers = named_layers(model);
  std::vector<std::string> chosen = select_targets(layers, cfg, model.family());
  for (auto& p : model.parameters()) p.set_requires_grad(false);
  LoraSummary s;
  for (const auto& [name, layer] : layers) {
    if (std::find(chosen.begin(), chosen.end(), name) == chosen.end()) continue;
    replace_layer(model, name, std::make_shared<LoraLinearImpl>(dynamic_cast<DenseLinearImpl&>(*layer), cfg));
    s.adapted.push_back(name);
    if (std::find(s.target_names.begin(), s.target_names.end(), last_component(name)) == s.target_names.end())
      s.target_names.push_back(last_component(name));
  }
  unfreeze_modules_to_save(named_layers(model), cfg);
  s.trainable = count(model.parameters(), true);
  s.total = count(model.parameters(), false);
  return s;
}

std::pair<std::string, std::string> check_peft_against_model(const ModelConfig& model_cfg, const PeftConfig& cfg) {
  ModelConfig mini = model_cfg;
  mini.from.clear();
  mini.vocab_size = mini.hidden_size = mini.intermediate_size = mini.max_seq_len = 8;
  mini.n_layers = mini.n_heads = mini.n_kv_heads = 1;
  mini.head_size = 0;
  auto generator = at::detail::getDefaultCPUGenerator();  // the run's seed must not see this model
  torch::Tensor rng_state = generator.get_state();
  std::pair<std::string, std::string> problem;
  try {
    apply_lora(*build_model(mini), cfg);
  } catch (const InputError& e) {
    std::string text = e.what();  // "peft.<key>: <message>"
    size_t colon = text.find(": ");
    problem = {text.substr(5, colon - 5), text.substr(colon + 2)};
  }
  generator.set_state(rng_state);
  return problem;
}

std::string describe_trainable(const LoraSummary& s) {
  char text[160];
  std::snprintf(text, sizeof text, "%lld of %lld parameters trainable (%.3f%%), %zu linears adapted",
                static_cast<long long>(s.trainable), static_cast<long long>(s.total),
                100.0 * static_cast<double>(s.trainable) / static_cast<double>(std::max<int64_t>(1, s.total)),
                s.adapted.size());
  return text;
}

void merge_lora(CausalLMImpl& model) {
  for (const auto& [name, layer] : named_layers(model)) {
    auto* lora = dynamic_cast<LoraLinearImpl*>(layer.get());
    if (!lora) continue;
    auto dense = std::make_shared<DenseLinearImpl>(lora->weight.size(1), lora->weight.size(0), lora->bias.defined());
    torch::NoGradGuard no_grad;
    dense->to(lora->weight.device(), lora->weight.scalar_type());
    dense->weight.copy_(lora->merged_weight());
    if (lora->bias.defined()) dense->bias.copy_(lora->bias);
    replace_layer(model, name, dense);
  }
}

NamedTensors trainable_tensors(CausalLMImpl& model) {
  NamedTensors out;
  for (const auto& item : model.named_parameters())
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value().detach().cpu());
  return out;
}

void load_trainable_tensors(CausalLMImpl& model, const NamedTensors& tensors, const std::string& source) {
  std::map<std::string, torch::Tensor> params;
  for (const auto& item : model.named_parameters())
    if (item.value().requires_grad()) params[item.key()] = item.value();
  std::vector<std::string> problems;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    auto it = params.find(name);
    if (it == params.end()) {
      problems.push_back("unexpected: " + name + " (no such adapter or trainable parameter in this model)");
    } else if (t.sizes() != it->second.sizes()) {
      problems.push_back("shape: " + name + " is " + c10::str(t.sizes()) + " in the file, " +
                         c10::str(it->second.sizes()) + " in this model (a different base or rank)");
    } else if (!torch::isFloatingType(t.scalar_type())) {
      problems.push_back("dtype: " + name + " is not floating point");
    }
    seen.insert(name);
  }
  for (const auto& [name, p] : params)
    if (!seen.count(name)) problems.push_back("missing: " + name);
  if (!problems.empty()) throw InputError(source + " does not fit the adapted model:\n  " + join(problems, "\n  "));
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : tensors) params[name].copy_(t);
}

}  // namespace lmforge::trainer
