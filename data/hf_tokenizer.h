// data/hf_tokenizer.h -- the tokenizer of a Hugging Face model directory: a BPE tokenizer.json,
// byte-level (GPT-2, Llama 3, Qwen2) or SentencePiece-style (Llama 2, Mistral). Not here:
// tokenizer.model files, Unigram/WordPiece, chat templates (Jinja); the byte tokenizer is in tokenizer.h.
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace lmforge::data {

// The directory's tokenizer, or nullptr when it has neither tokenizer.json nor tokenizer.model.
// Special tokens (bos/eos) come from tokenizer_config.json. A tokenizer of a kind lmforge does
// not implement (another tokenizer.json model, a tokenizer.model alone) or a malformed one
// throws InputError.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& dir);

}  // namespace lmforge::data
