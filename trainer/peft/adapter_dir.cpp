// trainer/peft/adapter_dir.cpp -- the PEFT directory format: key names, adapter_config.json fields and
// their checks. Tensor bytes go through core/safetensors.h.
#include "trainer/peft/adapter_dir.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/errors.h"
#include "core/files.h"
#include "core/safetensors.h"
#include "trainer/models/family.h"
#include "trainer/peft/lora_layer.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kPeftPrefix = "base_model.model.";  // PeftModel -> LoraModel -> the HF model

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
                 {"use_dora", cfg.method == PeftMethod::dora},
                 {"base_model_name_or_path", base_name},
                 {"bias", "none"},
                 {"modules_to_save", cfg.modules_to_save.empty() ? json(nullptr) : json(cfg.modules_to_save)},
                 {"fan_in_fan_out", family_of_arch(model_cfg.arch).hf_conv1d},
                 {"inference_mode", true},
                 {"init_lora_weights", cfg.init == LoraInit::gaussian ? json("gaussian") : json(true)},
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
  c.method = json_field<bool>(j, "use_dora", false, file) ? PeftMethod::dora : PeftMethod::lora;
  c.modules_to_save = json_field<std::vector<std::string>>(j, "modules_to_save", {}, file);
  if (c.r < 1) throw InputError(file + ": r must be at least 1");
  const json& targets = j.contains("target_modules") ? j["target_modules"] : json(nullptr);
  if (targets.is_string()) {
    std::string t = targets.get<std::string>();
    c.targets = {t == kAllLinearTargets ? t : "(?:" + t + ")"};  // PEFT full-matches a string as a regex
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

}  // namespace lmforge::trainer
