// data/hf_tokenizer.h -- BPE tokenizers from files: a Hugging Face tokenizer.json, byte-level
// (GPT-2, Llama 3, Qwen2) or SentencePiece-style (Llama 2, Mistral), and GPT-2's vocab.json +
// merges.txt (alias encoder.json + vocab.bpe). Not here: tokenizer.model (sentencepiece_tokenizer.h),
// Unigram/WordPiece tokenizer.json, chat templates (chat_template.h); the byte tokenizer is in tokenizer.h.
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace lmforge::data {

// The directory's tokenizer, or nullptr when it has neither tokenizer.json nor tokenizer.model.
// Special tokens (bos/eos/pad, additional_special_tokens) come from tokenizer_config.json. A
// tokenizer of a kind lmforge does not implement (another tokenizer.json model) or a malformed
// one throws InputError.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& dir);

// A BPE tokenizer from a tokenizer.json, vocab.json (merges.txt beside it) or encoder.json
// (vocab.bpe beside it), or a directory holding one of them (tried in that order). `special`
// overrides tokenizer_config.json beside the file; tokens missing from the vocabulary get new ids
// after it. GPT-2 files without either: bos = eos = <|endoftext|>.
std::unique_ptr<Tokenizer> load_bpe_files(const std::string& path, const SpecialTokens& special);

}  // namespace lmforge::data
