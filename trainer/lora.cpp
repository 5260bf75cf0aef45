// trainer/lora.cpp -- the LoRA/DoRA layer, target matching, freezing, merging, and the HF PEFT
// adapter directory (key names, adapter_config.json). Tensor bytes go through safetensors.h.
#include "trainer/lora.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/files.h"
#include "trainer/config.h"
#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"
#include "trainer/hf_model.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kPeftPrefix = "base_model.model.";  // PeftModel -> LoraModel -> the HF model
const std::string kAllLinear = "all-linear";
const std::string kRegexChars = "\\^$.|?*+()[]{}";


std::string last_component(const std::string& name) { return name.substr(name.rfind('.') + 1); }

// A single target with regex characters is a regex over the qualified name; otherwise suffixes.
bool is_regex(const std::vector<std::string>& targets) {
  return targets.size() == 1 && targets[0].find_first_of(kRegexChars) != std::string::npos;
}

bool suffix_match(const std::string& name, const std::string& suffix) {
  return name == suffix || ends_with(name, "." + suffix);
}

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
                                        const PeftConfig& cfg) {
  std::vector<std::string> linears;
  for (const auto& [name, layer] : layers)
    if (is_linear(layer)) linears.push_back(name);
  std::vector<std::string> targets = cfg.targets;
  if (targets.empty()) {  // PEFT's defaults, by the family the layer names reveal
    bool llama = std::any_of(linears.begin(), linears.end(), [](const auto& n) { return suffix_match(n, "q_proj"); });
    targets = llama ? std::vector<std::string>{"q_proj", "v_proj"} : std::vector<std::string>{"c_attn"};
  }
  const std::string known = "; the model's linear modules: " + linear_modules_text(linears);
  std::vector<std::string> chosen;
  if (targets.size() == 1 && targets[0] == kAllLinear) {
    for (const auto& name : linears)
      if (last_component(name) != "lm_head") chosen.push_back(name);
  } else if (is_regex(targets)) {
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

template <typename T>
T json_field(const json& j, const std::string& key, const T& fallback, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    throw InputError(file + ": " + key + " has the wrong type (" + j[key].dump() + ")");
  }
}

}  // namespace

double PeftConfig::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

void read_peft_config(config::Section& s, PeftConfig& c) {
  using config::at_least;
  s.field("method", c.method, {"none", "lora", "dora"});
  s.field("r", c.r, at_least(1));
  s.field("alpha", c.alpha, config::greater_than(0));
  s.field("dropout", c.dropout, at_least(0));
  s.field("targets", c.targets);
  s.field("use_rslora", c.use_rslora);
  s.field("modules_to_save", c.modules_to_save);
  s.field("init", c.init, {"kaiming", "gaussian"});
  s.field("from", c.from);
  if (c.dropout >= 1) s.error("dropout", "must be below 1 (the fraction of the adapter's input dropped)");
  if (c.targets.size() > 1 && std::find(c.targets.begin(), c.targets.end(), kAllLinear) != c.targets.end())
    s.error("targets", "all-linear stands alone; it already covers every linear but the output head");
  if (is_regex(c.targets) && c.targets[0] != kAllLinear) {
    try {
      std::regex check(c.targets[0]);
    } catch (const std::regex_error& e) {
      s.error("targets", "'" + c.targets[0] + "' is not a valid regular expression: " + e.what());
    }
  }
  for (const auto& t : c.targets)
    if (c.targets.size() > 1 && t.find_first_of(kRegexChars) != std::string::npos)
      s.error("targets", "'" + t + "': a list holds module-name suffixes; give a regex as a single string");
  if (!c.from.empty()) {
    try {
      read_peft_adapter_config(c.from);
    } catch (const InputError& e) {
      s.error("from", e.what());
    }
  }
}

// ------------------------------------------------------------------------------------ the layer

LoraLinearImpl::LoraLinearImpl(const DenseLinearImpl& base, const PeftConfig& cfg) : scale(cfg.scale()) {
  weight = register_parameter("weight", base.weight, /*requires_grad=*/false);
  if (base.bias.defined()) bias = register_parameter("bias", base.bias, /*requires_grad=*/false);
  const int64_t out = weight.size(0), in = weight.size(1);
  lora_A = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(in, cfg.r).bias(false)));
  lora_B = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(cfg.r, out).bias(false)));
  dropout = register_module("lora_dropout", torch::nn::Dropout(cfg.dropout));
  torch::NoGradGuard no_grad;
  if (cfg.init == "gaussian") lora_A->weight.normal_(0.0, 1.0 / static_cast<double>(cfg.r));
  lora_B->weight.zero_();
  lora_A->to(weight.device(), weight.scalar_type());
  lora_B->to(weight.device(), weight.scalar_type());
  if (cfg.method == "dora")
    lora_magnitude_vector = register_parameter("lora_magnitude_vector", weight.norm(2, {1}).detach().clone());
}

torch::Tensor LoraLinearImpl::dora_row_scale(const torch::Tensor& combined) const {
  // The norm is a constant to the gradient, as in the DoRA paper (section 4.3) and PEFT.
  return lora_magnitude_vector / combined.norm(2, {1}).detach();
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  auto y = F::linear(x, weight, bias);                   // (..., out): the base, bit-identical to DenseLinear
  auto update = lora_B(lora_A(dropout(x))) * scale;      // (..., out): zero at init
  if (!lora_magnitude_vector.defined()) return y + update;
  // PEFT's DoRA form: base + (m/||W'|| - 1) x W^T + m/||W'|| * update; exactly the base at init.
  auto row = dora_row_scale(weight + torch::mm(lora_B->weight, lora_A->weight) * scale);  // (out)
  return y + (row - 1) * F::linear(x, weight) + row * update;
}

torch::Tensor LoraLinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  auto w = weight.to(torch::kFloat);
  auto merged = w + torch::mm(lora_B->weight.to(torch::kFloat), lora_A->weight.to(torch::kFloat)) * scale;
  if (lora_magnitude_vector.defined())
    merged = merged * (lora_magnitude_vector.to(torch::kFloat) / merged.norm(2, {1})).unsqueeze(1);
  return merged.to(weight.scalar_type());
}

// ------------------------------------------------------------------------------ model surgery

LoraSummary apply_lora(CausalLMImpl& model, const PeftConfig& cfg) {
  auto layers = named_layers(model);
  std::vector<std::string> chosen = select_targets(layers, cfg);
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

// ------------------------------------------------------------------------------- base reference

json base_reference(const std::string& base_dir) {
  json files = json::object();
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(base_dir)) {
    std::string name = entry.path().filename().string();
    if (name == "config.json" || ends_with(name, ".safetensors") || name == "model.safetensors.index.json")
      paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) files[p.filename().string()] = sha256_file(p.string());
  return {{"path", fs::absolute(base_dir).lexically_normal().string()}, {"files", files}};
}

void check_base_reference(const json& saved, const std::string& what) {
  const std::string path = saved.at("path").get<std::string>();
  if (!fs::is_directory(path))
    throw InputError(what + " was trained on the base model at " + path + ", which no longer exists");
  json now = base_reference(path);
  if (now["files"] != saved.at("files"))
    throw InputError(what + " was trained on the base model at " + path +
                     ", whose files have changed since (SHA-256 differs); the adapter does not apply to it");
}

// ------------------------------------------------------------------------- PEFT adapter dirs

void save_peft_adapter(CausalLMImpl& model, const ModelConfig& model_cfg, const PeftConfig& cfg,
                       const std::string& base_name, const std::string& dir, torch::ScalarType dtype) {
  std::vector<std::string> adapted;
  for (const auto& [name, layer] : named_layers(model))
    if (dynamic_cast<LoraLinearImpl*>(layer.get())) adapted.push_back(name);
  NamedTensors tensors;
  for (auto& [name, t] : trainable_tensors(model)) tensors.emplace_back(kPeftPrefix + name, t.to(dtype).contiguous());
  fs::create_directories(dir);
  save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  json alpha = cfg.alpha == std::floor(cfg.alpha) ? json(static_cast<int64_t>(cfg.alpha)) : json(cfg.alpha);
  json config = {{"peft_type", "LORA"},
                 {"task_type", "CAUSAL_LM"},
                 {"r", cfg.r},
                 {"lora_alpha", alpha},
                 {"lora_dropout", cfg.dropout},
                 {"target_modules", target_modules_json(model, adapted)},
                 {"use_rslora", cfg.use_rslora},
                 {"use_dora", cfg.method == "dora"},
                 {"base_model_name_or_path", base_name},
                 {"bias", "none"},
                 {"modules_to_save", cfg.modules_to_save.empty() ? json(nullptr) : json(cfg.modules_to_save)},
                 {"fan_in_fan_out", model_cfg.arch == "gpt2"},  // GPT-2's Conv1D stores (in, out)
                 {"inference_mode", true},
                 {"init_lora_weights", cfg.init == "gaussian" ? json("gaussian") : json(true)},
                 {"rank_pattern", json::object()},
                 {"alpha_pattern", json::object()},
                 {"layers_to_transform", nullptr},
                 {"layers_pattern", nullptr},
                 {"revision", nullptr}};
  std::ofstream((fs::path(dir) / "adapter_config.json").string()) << config.dump(2) << "\n";
}

PeftConfig read_peft_adapter_config(const std::string& dir) {
  const std::string file = (fs::path(dir) / "adapter_config.json").string();
  if (!fs::is_directory(dir)) throw InputError(dir + ": not a directory (expected a PEFT adapter directory)");
  json j = read_json_file(file);
  PeftConfig c;
  c.from = dir;
  std::string type = json_field<std::string>(j, "peft_type", "", file);
  if (type != "LORA") throw InputError(file + ": peft_type is '" + type + "'; lmforge loads LORA adapters");
  c.r = json_field<int64_t>(j, "r", 8, file);
  c.alpha = json_field<double>(j, "lora_alpha", 8.0, file);  // PEFT's defaults when absent
  c.dropout = json_field<double>(j, "lora_dropout", 0.0, file);
  c.use_rslora = json_field<bool>(j, "use_rslora", false, file);
  c.method = json_field<bool>(j, "use_dora", false, file) ? "dora" : "lora";
  c.modules_to_save = json_field<std::vector<std::string>>(j, "modules_to_save", {}, file);
  if (c.r < 1) throw InputError(file + ": r must be at least 1");
  const json& targets = j.contains("target_modules") ? j["target_modules"] : json(nullptr);
  if (targets.is_string()) {
    std::string t = targets.get<std::string>();
    c.targets = {t == kAllLinear ? t : "(?:" + t + ")"};  // PEFT full-matches a string as a regex
  } else {
    c.targets = json_field<std::vector<std::string>>(j, "target_modules", {}, file);
  }
  if (json_field<std::string>(j, "bias", "none", file) != "none")
    throw InputError(file + ": bias '" + j["bias"].get<std::string>() + "' is not supported (only none)");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (j.contains(key) && !j[key].is_null() && !j[key].empty())
      throw InputError(file + ": " + key + " (per-module ranks or alphas) is not supported");
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null())
    throw InputError(file + ": layers_to_transform is not supported; give target_modules as a regex instead");
  return c;
}

LoraSummary load_peft_adapter(CausalLMImpl& model, const std::string& dir) {
  PeftConfig cfg = read_peft_adapter_config(dir);
  const std::string file = (fs::path(dir) / "adapter_model.safetensors").string();
  if (!fs::exists(file))
    throw InputError(dir + ": no adapter_model.safetensors" +
                     (fs::exists(fs::path(dir) / "adapter_model.bin")
                          ? std::string(" (adapter_model.bin is a pickle, which lmforge does not load; re-save "
                                        "with safe_serialization=True)")
                          : std::string()));
  LoraSummary s;
  try {
    s = apply_lora(model, cfg);
  } catch (const InputError& e) {
    throw InputError(dir + "/adapter_config.json does not fit this base model: " + e.what());
  }
  NamedTensors tensors;
  for (auto& [name, t] : load_safetensors(file)) {
    if (name.rfind(kPeftPrefix, 0) != 0)
      throw InputError(file + ": tensor " + name + " lacks PEFT's '" + kPeftPrefix + "' prefix");
    tensors.emplace_back(name.substr(kPeftPrefix.size()), t);
  }
  load_trainable_tensors(model, tensors, file);
  return s;
}

// ---------------------------------------------------------------------------------- LoRA runs

PeftConfig effective_peft_config(const PeftConfig& cfg) {
  return cfg.from.empty() ? cfg : read_peft_adapter_config(cfg.from);
}

std::string prepare_lora_base(CausalLMImpl& model, const ModelConfig& model_cfg, const std::string& run_dir) {
  if (!model_cfg.from.empty()) return model_cfg.from;
  const std::string dir = (fs::path(run_dir) / "base").string();
  if (fs::exists(fs::path(dir) / "config.json")) {
    ModelConfig saved = model_cfg;
    saved.from = dir;
    load_hf_weights(model, saved);
  } else {
    save_hf_model(model, model_cfg, dir);
  }
  return dir;
}

void save_lora_run_export(CausalLMImpl& model, const ModelConfig& model_cfg, const PeftConfig& cfg,
                          const std::string& base_dir, const std::string& run_dir) {
  save_peft_adapter(model, model_cfg, effective_peft_config(cfg), base_dir, (fs::path(run_dir) / "export" / "adapter").string());
  merge_lora(model);
  save_run_export(model, model_cfg, run_dir);
}

LoraRun open_lora_run(const std::string& run_dir) {
  fs::path yaml = fs::path(run_dir) / "config.yaml", base = fs::path(run_dir) / "base.json",
           weights = fs::path(run_dir) / "model.safetensors";
  if (!fs::exists(yaml)) throw InputError(run_dir + ": not an lmforge run directory (no config.yaml)");
  Config cfg = load_config(yaml.string());
  if (!cfg.peft.enabled()) throw InputError(run_dir + " trained every weight (peft.method: none): it has no adapter");
  if (!fs::exists(base) || !fs::exists(weights))
    throw InputError(run_dir + ": a LoRA run without base.json and model.safetensors (did it finish?)");
  json reference = read_json_file(base.string());
  check_base_reference(reference, run_dir);
  LoraRun run;
  run.base_dir = reference.at("path").get<std::string>();
  run.model = load_hf_model(run.base_dir, &run.model_cfg);
  run.peft = effective_peft_config(cfg.peft);
  apply_lora(*run.model, run.peft);
  load_trainable_tensors(*run.model, load_safetensors(weights.string()), weights.string());
  return run;
}

}  // namespace lmforge::trainer
