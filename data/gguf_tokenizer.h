// data/gguf_tokenizer.h -- a tokenizer as GGUF's tokenizer.ggml.* keys (and tokenizer.chat_template)
// spell it, so llama.cpp tokenizes and templates like lmforge. The container is core/gguf.h.
#pragma once

#include <cstdint>

#include "core/gguf.h"
#include "data/tokenizer.h"

namespace lmforge::data {

// Adds the tokenizer's keys to `w`: model kind, pre-tokenizer name, tokens (padded with unused
// "[PAD<id>]" entries up to the model's vocab_size, as llama.cpp's converter pads), token types,
// scores or merges, special ids, add_bos/add_eos, the chat template. InputError naming what llama.cpp
// cannot describe (`where` starts the message): a pre-tokenizer regex it has no name for, a prefix
// space, ids around the text other than bos/eos, a vocabulary larger than the model's.
void add_gguf_tokenizer(GgufWriter& w, const Tokenizer& tok, int64_t vocab_size, const std::string& where);

}  // namespace lmforge::data
