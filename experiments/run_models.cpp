// experiments/run_models.cpp -- reopening HF and run directories: which files say what the model
// is, its tokenizer, and a LoRA run's base checked by content. The formats are trainer/'s and data/'s.
#include "experiments/run_models.h"

#include <filesystem>

#include "core/errors.h"
#include "core/files.h"
#include "core/run_dir.h"
#include "core/safetensors.h"
#include "data/hf_tokenizer.h"
#include "experiments/config.h"
#include "trainer/models/hf_model.h"
#include "trainer/peft/adapter_dir.h"
#include "trainer/peft/apply.h"
#include "trainer/peft/lora_run.h"

namespace lmforge::experiments {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace trainer;

LoraRun open_lora_run(const std::string& run_dir) {
  const RunDir files{run_dir};
  fs::path yaml = files.config(), base = files.base_reference(), weights = files.final_weights();
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

LoadedModel open_model_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw InputError(dir + ": not a directory");
  LoadedModel out;
  std::string hf_dir;
  if (fs::exists(fs::path(dir) / "config.json")) {
    hf_dir = dir;
  } else if (fs::exists(fs::path(RunDir{dir}.export_dir()) / "config.json")) {
    hf_dir = RunDir{dir}.export_dir();
  }
  if (!hf_dir.empty()) {
    out.model = load_hf_model(hf_dir, &out.config);
    try {  // a tokenizer lmforge cannot read must not stop scoring or generating from token ids
      out.tokenizer = data::load_hf_tokenizer(hf_dir);
    } catch (const InputError& e) {
      out.tokenizer_error = e.what();
    }
    if (out.tokenizer && out.config.eos_token_ids.empty() && out.tokenizer->eos_id() >= 0)
      out.config.eos_token_ids = {out.tokenizer->eos_id()};
    out.tokenizer_source = data::tokenizer_of_model_dir(hf_dir);
    out.kind = "hf";
    return out;
  }
  fs::path yaml = RunDir{dir}.config(), weights = RunDir{dir}.final_weights();
  if (!fs::exists(yaml) || !fs::exists(weights))
    throw InputError(dir + ": neither an HF model directory (config.json) nor an lmforge run directory "
                           "(config.yaml + model.safetensors)");
  Config cfg = load_config(yaml.string());
  out.config = cfg.model;
  if (cfg.peft.enabled()) {  // a LoRA run: its base plus its adapter weights
    LoraRun run = open_lora_run(dir);
    out.model = run.model;
  } else {
    ModelConfig fresh = cfg.model;
    fresh.from.clear();  // the run's own weights replace whatever it started from
    out.model = build_model(fresh);
    load_lmforge_weights(*out.model, fresh, weights.string());
  }
  out.tokenizer = data::make_tokenizer(cfg.tokenizer);
  out.tokenizer_source = cfg.tokenizer;
  if (out.config.eos_token_ids.empty()) out.config.eos_token_ids = {out.tokenizer->eos_id()};
  out.kind = "run";
  return out;
}

}  // namespace lmforge::experiments
