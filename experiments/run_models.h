// experiments/run_models.h -- models reopened from directories for inference and export: an HF
// directory, an lmforge run directory (its config.yaml and weights), a LoRA run (base + adapters).
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"
#include "trainer/models/model.h"
#include "trainer/peft/peft_config.h"

namespace lmforge::experiments {

using trainer::CausalLM;
using trainer::ModelConfig;
using trainer::PeftConfig;

// A model ready for inference with what surrounds it.
struct LoadedModel {
  CausalLM model;
  ModelConfig config;
  std::unique_ptr<data::Tokenizer> tokenizer;  // null when the directory has none lmforge reads
  std::string tokenizer_error;                 // why an HF directory's tokenizer files could not be read:
                                               // token ids still work, text reports this
  std::string kind;                            // "hf" or "run"
  data::TokenizerConfig tokenizer_source;      // where `tokenizer` was read from (its files go into exports)
};

// An HF directory (config.json) or an lmforge run directory (config.yaml + model.safetensors,
// or its export/). Throws InputError naming what is missing or wrong.
LoadedModel open_model_dir(const std::string& dir);

// A LoRA run directory rebuilt: its base (checked against RUN_DIR/base.json), the adapters of
// its config and its trained tensors (RUN_DIR/model.safetensors). InputError for a full run.
struct LoraRun {
  CausalLM model;
  ModelConfig model_cfg;  // the base's config.json (from = the base directory)
  PeftConfig peft;        // effective: the adapter's own config when peft.from was used
  std::string base_dir;
};
LoraRun open_lora_run(const std::string& run_dir);

}  // namespace lmforge::experiments
