// trainer/models/hf_model.h -- Hugging Face model directories: config.json <-> ModelConfig, loading
// weights (single file or sharded, any float dtype) into a built model, and saving a directory.
// What differs by family (keys, names, transposes) is the family's; tokenizers live in data/.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainer/models/model.h"

namespace lmforge::trainer {

// Reads DIR/config.json (any registered family's model_type; transformers v4 and v5 spellings)
// into a ModelConfig with from = DIR. Throws InputError naming the file and the key.
ModelConfig read_hf_config(const std::string& dir);

// Copies the weights of cfg.from into `model` (built from cfg), converting each tensor to the
// parameter's dtype. Accepts model.safetensors or a sharded index; GPT-2 Conv1D weights are
// transposed; keys with or without the family's prefix; stray buffers ignored.
// Missing, unexpected and mis-shaped tensors are all listed in one InputError.
void load_hf_weights(CausalLMImpl& model, const ModelConfig& cfg);

// The same strict copy for a file lmforge wrote itself (a run's model.safetensors: lmforge names,
// Linear layouts, no prefixes to guess).
void load_lmforge_weights(CausalLMImpl& model, const ModelConfig& cfg, const std::string& file);

// read_hf_config + build_model + load_hf_weights.
CausalLM load_hf_model(const std::string& dir, ModelConfig* cfg_out = nullptr);

struct HfSaveOptions {
  int64_t max_shard_bytes = 5'000'000'000;   // transformers' default max_shard_size ("5GB")
  torch::ScalarType dtype = torch::kFloat;   // written dtype (also config.json's torch_dtype)
  std::string copy_files_from;               // directory whose tokenizer/generation files are copied
};

// Writes config.json, model.safetensors (or model-0000i-of-0000N.safetensors shards plus
// model.safetensors.index.json) and the tokenizer files of copy_files_from into `dir`.
void save_hf_model(CausalLMImpl& model, const ModelConfig& cfg, const std::string& dir,
                   const HfSaveOptions& options = {});

// A training run's final export: RUN_DIR/export as an fp32 HF directory (tokenizer files of
// cfg.from copied) with a README.md model card naming the run and what it started from.
void save_run_export(CausalLMImpl& model, const ModelConfig& cfg, const std::string& run_dir);

// The files of an HF directory that describe the tokenizer and generation, copied on save.
const std::vector<std::string>& hf_side_files();

}  // namespace lmforge::trainer
