// trainer/peft/adapter_dir.h -- HF PEFT adapter directories: adapter_model.safetensors with PEFT's key
// names and adapter_config.json, written and read. Applying adapters is apply.h's.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "trainer/models/model.h"
#include "trainer/peft/apply.h"

namespace lmforge::trainer {

// HF PEFT adapter directory: adapter_model.safetensors (PEFT key names, shapes) and
// adapter_config.json. `base_name` fills base_model_name_or_path.
void save_peft_adapter(CausalLMImpl& model, const ModelConfig& model_cfg, const PeftConfig& cfg,
                       const std::string& base_name, const std::string& dir,
                       torch::ScalarType dtype = torch::kFloat);
// adapter_config.json of `dir` as a PeftConfig with from = dir. InputError for a non-LoRA
// peft_type, unsupported options or malformed fields, naming the file and key.
PeftConfig read_peft_adapter_config(const std::string& dir);
// Applies the adapter of `dir` (ours or HF PEFT's) to `model` and loads its tensors. Mismatched
// shapes, unknown keys and targets that match nothing are InputErrors naming the directory.
LoraSummary load_peft_adapter(CausalLMImpl& model, const std::string& dir);

// cfg itself, or with peft.from set the adapter_config.json of that directory.
PeftConfig effective_peft_config(const PeftConfig& cfg);

}  // namespace lmforge::trainer
