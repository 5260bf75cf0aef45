// trainer/peft/lora_run.cpp -- the frozen base of a LoRA run (RUN_DIR/base, base.json by SHA-256) and the
// adapter + merged exports. The adapter format is adapter_dir.cpp's.
#include "trainer/peft/lora_run.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/digest.h"
#include "core/files.h"
#include "core/errors.h"
#include "core/run_dir.h"
#include "trainer/models/hf_model.h"
#include "trainer/peft/adapter_dir.h"
#include "trainer/peft/apply.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using json = nlohmann::json;

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

std::string prepare_lora_base(CausalLMImpl& model, const ModelConfig& model_cfg, const std::string& run_dir) {
  if (!model_cfg.from.empty()) return model_cfg.from;
  const std::string dir = RunDir{run_dir}.base();
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
  save_peft_adapter(model, model_cfg, effective_peft_config(cfg), base_dir, RunDir{run_dir}.adapter_dir());
  merge_lora(model);
  save_run_export(model, model_cfg, run_dir);
}

}  // namespace lmforge::trainer
