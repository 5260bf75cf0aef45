// trainer/models/gguf_export.h -- a model and its tokenizer as one GGUF file llama.cpp (and Ollama)
// runs: the family's GgufLayout for names and keys, ggml encodings from core/gguf.h. HF I/O is hf_model.h.
#pragma once

#include <string>
#include <vector>

#include "core/gguf.h"
#include "data/tokenizer.h"
#include "trainer/models/model.h"

namespace lmforge::trainer {

struct GgufExportOptions {
  GgmlType type = GgmlType::f32;  // matrices; norms and biases stay f32 as llama.cpp's converter keeps them
  std::string name;               // general.name
};

// The --type spelling (f32, f16, bf16, q8_0, q4_0); InputError naming the choices otherwise.
GgmlType ggml_type_of(const std::string& name);

// Writes `model` (cfg's family, llama.cpp's tensor names and RoPE layout) with `tok` embedded to
// `path`, atomically. Everything is checked and encoded before the file is created, so bad input
// (a family llama.cpp has no architecture for, a tokenizer GGUF cannot describe, rows a block size
// does not divide) throws InputError naming it and leaves no file. Returns the layout's notes.
std::vector<std::string> save_gguf(CausalLMImpl& model, const ModelConfig& cfg, const data::Tokenizer& tok,
                                   const std::string& path, const GgufExportOptions& options = {});

}  // namespace lmforge::trainer
