// data/hf_tokenizer.h -- BPE tokenizers from files: a Hugging Face tokenizer.json, byte-level
// (GPT-2, Llama 3, Qwen2) or SentencePiece-style (Llama 2, Mistral), and GPT-2's vocab.json +
// merges.txt (alias encoder.json + vocab.bpe). Not here: tokenizer.model (sentencepiece_tokenizer.h),
// Unigram/WordPiece tokenizer.json, chat templates (chat_template.h); the byte tokenizer is in tokenizer.h.
// Also here: writing a tokenizer's files into an exported HF directory.
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace lmforge::data {

// The directory's tokenizer, or nullptr when it has no tokenizer.json, vocab.json (+ merges.txt) or
// tokenizer.model (tried in that order).
// Special tokens (bos/eos/pad, additional_special_tokens) come from tokenizer_config.json. A
// tokenizer of a kind lmforge does not implement (another tokenizer.json model) or a malformed
// one throws InputError.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& dir);

// A BPE tokenizer from a tokenizer.json, vocab.json (merges.txt beside it) or encoder.json
// (vocab.bpe beside it), or a directory holding one of them (tried in that order). `special`
// overrides tokenizer_config.json beside the file; tokens missing from the vocabulary get new ids
// after it. GPT-2 files without either: bos = eos = <|endoftext|>.
std::unique_ptr<Tokenizer> load_bpe_files(const std::string& path, const SpecialTokens& special);

// Writes `tok` (made from `cfg`) into the HF model directory `dir` so that AutoTokenizer opens it as
// lmforge reads it: the vocabulary it was read from (tokenizer.json; vocab.json + merges.txt, GPT-2's
// encoder.json + vocab.bpe under those names; tokenizer.model) or, for the byte tokenizer, the
// equivalent byte-level tokenizer.json; tokenizer_config.json (special tokens, chat template; the
// source's own keys kept), special_tokens_map.json and generation_config.json (bos/eos/pad ids).
void save_hf_tokenizer_files(const TokenizerConfig& cfg, const Tokenizer& tok, const std::string& dir);

}  // namespace lmforge::data
