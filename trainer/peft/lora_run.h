// trainer/peft/lora_run.h -- a LoRA run's bookkeeping: its frozen base (saved or named, and checked by
// content), and its final exports. Run-directory names are core/run_dir.h's.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "trainer/models/model.h"
#include "trainer/peft/peft_config.h"

namespace lmforge::trainer {

// Where a LoRA run's frozen base lives and what it held: {"path", "files": {name: sha256}} over
// the directory's config.json and weight files.
nlohmann::json base_reference(const std::string& base_dir);
// InputError when `saved` (from a checkpoint or run) and the base now on disk differ.
void check_base_reference(const nlohmann::json& saved, const std::string& what);

// A LoRA run's frozen base as an HF directory: model_cfg.from, or for a random initialisation
// `model` saved once as RUN_DIR/base (reloaded from there when it exists: a resumed run).
std::string prepare_lora_base(CausalLMImpl& model, const ModelConfig& model_cfg, const std::string& run_dir);

// A LoRA run's final outputs: RUN_DIR/export/adapter (PEFT) and, merged in fp32, RUN_DIR/export
// (HF directory, as a full run's). Merges `model` in place.
void save_lora_run_export(CausalLMImpl& model, const ModelConfig& model_cfg, const PeftConfig& cfg,
                          const std::string& base_dir, const std::string& run_dir);

}  // namespace lmforge::trainer
