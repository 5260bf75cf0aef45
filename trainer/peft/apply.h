// trainer/peft/apply.h -- LoRA applied to a built model: target matching, freezing, modules to save,
// merging back, and the trainable tensors. The layer is lora_layer.h's; files are adapter_dir.h's.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "trainer/models/model.h"
#include "trainer/peft/peft_config.h"

namespace lmforge::trainer {

struct LoraSummary {
  std::vector<std::string> adapted;       // qualified names of the swapped linears
  std::vector<std::string> target_names;  // their distinct last components, as PEFT's target_modules
  int64_t trainable = 0, total = 0;       // parameter counts after applying
};

// Swaps the linears cfg.targets match (default: the family's lora_targets) for LoRA layers, freezes every other parameter and unfreezes
// modules_to_save. Throws InputError naming peft.targets (with the model's linear modules) when
// a target matches nothing or a non-linear layer, and peft.modules_to_save for a bad name.
LoraSummary apply_lora(CausalLMImpl& model, const PeftConfig& cfg);

// Config-time check: applies `cfg` to a miniature model of model_cfg's family (layer names depend
// on the family and flags, not the sizes). Returns {key, message} of the first problem, or {}.
std::pair<std::string, std::string> check_peft_against_model(const ModelConfig& model_cfg, const PeftConfig& cfg);

// "12345 of 67890 parameters trainable (18.2%)": the run-log line.
std::string describe_trainable(const LoraSummary& s);

// Replaces every LoRA layer with a plain linear holding its merged weight (fp32 merge).
void merge_lora(CausalLMImpl& model);

// The trainable parameters by lmforge name (a LoRA run's checkpoint and final weights).
NamedTensors trainable_tensors(CausalLMImpl& model);

// Copies `tensors` (lmforge names, as trainable_tensors wrote) into the trainable parameters.
// Every trainable parameter must be present with its shape; InputError naming `source` lists
// missing, unexpected and mis-shaped tensors.
void load_trainable_tensors(CausalLMImpl& model, const NamedTensors& tensors, const std::string& source);

// PEFT's target_modules for `adapted` (qualified names): the distinct leaf names, or a regex that
// selects exactly them when the leaf names would select more (PEFT full-matches a string).
nlohmann::json target_modules_json(CausalLMImpl& model, const std::vector<std::string>& adapted);

// Whether `name` ends with the module-name suffix `suffix` (a whole component).
bool suffix_match(const std::string& name, const std::string& suffix);
// The last component of a qualified name ("q_proj" of "model.layers.0.self_attn.q_proj").
std::string last_component(const std::string& name);
}  // namespace lmforge::trainer
