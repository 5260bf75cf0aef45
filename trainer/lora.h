// trainer/lora.h -- LoRA and DoRA adapters on a built model: the `peft:` config, swapping target
// linears through replace_layer, merging, and HF PEFT adapter directories. Models know nothing of it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "trainer/model.h"
#include "core/safetensors.h"

namespace lmforge::config {
class Section;
}

namespace lmforge::trainer {

struct PeftConfig {
  std::string method = "none";  // none | lora | dora
  int64_t r = 8;                // rank: adds r x (in + out) parameters per adapted linear (PEFT's default)
  double alpha = 16.0;          // adapter output scaled by alpha / r: 2 x r, the usual LoRA setting
  double dropout = 0.0;         // on the adapter's input only; PEFT's default
  // Module-name suffixes ("q_proj"), one regex over the qualified name ("model\.layers\.0\..*"),
  // or all-linear (every linear but the output head). Empty: PEFT's defaults, llama q_proj + v_proj,
  // gpt2 c_attn.
  std::vector<std::string> targets;
  bool use_rslora = false;      // scale alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA)
  std::vector<std::string> modules_to_save;  // layers trained in full (e.g. lm_head), by suffix
  std::string init = "kaiming";  // A's init: kaiming (uniform, as nn.Linear and PEFT) | gaussian (std 1/r); B = 0
  std::string from;              // a PEFT adapter directory to start from; its adapter_config.json
                                 // then decides method, r, alpha, targets and modules_to_save

  bool enabled() const { return method != "none" || !from.empty(); }
  double scale() const;  // alpha / r, or alpha / sqrt(r) with use_rslora
};
void read_peft_config(config::Section& s, PeftConfig& c);

// A frozen linear plus a trainable low-rank update: y = x W^T + b + scale * B(A(dropout(x))).
// DoRA rescales each output row of W + scale * B A to the learned magnitude. Parameter names
// (weight, bias, lora_A.weight, lora_B.weight, lora_magnitude_vector) are PEFT's after its prefix.
class LoraLinearImpl : public LayerImpl {
 public:
  LoraLinearImpl(const DenseLinearImpl& base, const PeftConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in) -> (..., out)
  // W + scale * B A (DoRA: row-rescaled), computed in fp32, returned in W's dtype. (out, in)
  torch::Tensor merged_weight() const;

  torch::Tensor weight, bias;          // the base's own tensors, frozen
  torch::nn::Linear lora_A{nullptr};   // (r, in)
  torch::nn::Linear lora_B{nullptr};   // (out, r), zero at init: the adapted model starts as the base
  torch::Tensor lora_magnitude_vector; // (out) DoRA only: ||W||_row at init
  torch::nn::Dropout dropout{nullptr};
  double scale;

 private:
  torch::Tensor dora_row_scale(const torch::Tensor& combined) const;  // (out) m / ||W + s B A||_row
};

struct LoraSummary {
  std::vector<std::string> adapted;       // qualified names of the swapped linears
  std::vector<std::string> target_names;  // their distinct last components, as PEFT's target_modules
  int64_t trainable = 0, total = 0;       // parameter counts after applying
};

// Swaps the linears cfg.targets match for LoRA layers, freezes every other parameter and unfreezes
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

// Where a LoRA run's frozen base lives and what it held: {"path", "files": {name: sha256}} over
// the directory's config.json and weight files.
nlohmann::json base_reference(const std::string& base_dir);
// InputError when `saved` (from a checkpoint or run) and the base now on disk differ.
void check_base_reference(const nlohmann::json& saved, const std::string& what);

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

// A LoRA run's frozen base as an HF directory: model_cfg.from, or for a random initialisation
// `model` saved once as RUN_DIR/base (reloaded from there when it exists: a resumed run).
std::string prepare_lora_base(CausalLMImpl& model, const ModelConfig& model_cfg, const std::string& run_dir);

// A LoRA run's final outputs: RUN_DIR/export/adapter (PEFT) and, merged in fp32, RUN_DIR/export
// (HF directory, as a full run's). Merges `model` in place.
void save_lora_run_export(CausalLMImpl& model, const ModelConfig& model_cfg, const PeftConfig& cfg,
                          const std::string& base_dir, const std::string& run_dir);

// A LoRA run directory rebuilt: its base (checked against RUN_DIR/base.json), the adapters of
// its config and its trained tensors (RUN_DIR/model.safetensors). InputError for a full run.
struct LoraRun {
  CausalLM model;
  ModelConfig model_cfg;  // the base's config.json (from = the base directory)
  PeftConfig peft;        // effective: the adapter's own config when peft.from was used
  std::string base_dir;
};
LoraRun open_lora_run(const std::string& run_dir);

}  // namespace lmforge::trainer
