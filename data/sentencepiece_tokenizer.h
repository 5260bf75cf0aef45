// data/sentencepiece_tokenizer.h -- SentencePiece tokenizer.model files (Unigram and BPE), read
// without libsentencepiece. Not here: tokenizer.json (hf_tokenizer.h), the tokenizer interface (tokenizer.h).
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace lmforge::data {

// The model's bos/eos/pad/unk come from its trainer spec; `special` overrides bos/eos/pad by
// piece text and adds `extra` tokens that stay whole in text (new ones get ids after the model's).
// A file that is not a SentencePiece model, or one of a kind not implemented (WORD, CHAR,
// whitespace-as-suffix), throws InputError naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path, const SpecialTokens& special);

}  // namespace lmforge::data
