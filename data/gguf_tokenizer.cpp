// data/gguf_tokenizer.cpp -- TokenizerDescription -> tokenizer.ggml.*: llama.cpp's tokenizer model
// names, its pre-tokenizer names by regex, token types. The names here are GGUF's, not model families.
#include "data/gguf_tokenizer.h"

#include <map>

#include "core/errors.h"
#include "data/chat_template.h"

namespace lmforge::data {

namespace {

// llama.cpp's tokenizer.ggml.pre names for the pre-tokenizer regexes lmforge's tokenizers use, as
// the tokenizer.json files of those models spell them (llama.cpp compiles its own copy of each).
const std::map<std::string, std::string>& pre_tokenizer_names() {
  static const std::map<std::string, std::string> names = {
      {R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", "gpt-2"},
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "llama-bpe"},
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "qwen2"},
  };
  return names;
}

}  // namespace

void add_gguf_tokenizer(GgufWriter& w, const Tokenizer& tok, int64_t vocab_size, const std::string& where) {
  std::optional<TokenizerDescription> described = tok.describe();
  if (!described)
    throw InputError(where + ": tokenizer " + tok.fingerprint() +
                     " cannot be described in GGUF (byte-level BPE and the byte tokenizer can)");
  TokenizerDescription d = std::move(*described);
  if (static_cast<int64_t>(d.tokens.size()) > vocab_size)
    throw InputError(where + ": the tokenizer has " + std::to_string(d.tokens.size()) +
                     " tokens but the model's vocab_size is " + std::to_string(vocab_size));
  if (d.add_prefix_space)
    throw InputError(where + ": the tokenizer adds a prefix space (ByteLevel add_prefix_space), which GGUF cannot express");
  auto only = [](const std::vector<int32_t>& ids, int32_t id) { return ids.empty() || (ids.size() == 1 && ids[0] == id); };
  if (!only(d.prefix_ids, tok.bos_id()) || !only(d.suffix_ids, tok.eos_id()))
    throw InputError(where + ": the tokenizer adds ids other than bos before / eos after the text, which GGUF cannot express");

  if (d.kind == TokenizerDescription::Kind::byte_level_bpe) {
    std::string pre = "default";  // no regex: only safe without merges (llama.cpp always splits)
    if (!d.pre_pattern.empty()) {
      auto it = pre_tokenizer_names().find(d.pre_pattern);
      if (it == pre_tokenizer_names().end())
        throw InputError(where + ": llama.cpp has no pre-tokenizer for the regex " + d.pre_pattern +
                         " (it knows GPT-2's, Llama 3's and Qwen2's)");
      pre = it->second;
    } else if (!d.merges.empty()) {
      throw InputError(where + ": a byte-level BPE with merges but no pre-tokenizer regex cannot be described in GGUF");
    }
    w.add_string("tokenizer.ggml.model", "gpt2");  // llama.cpp's name for byte-level BPE
    w.add_string("tokenizer.ggml.pre", pre);
  } else {
    w.add_string("tokenizer.ggml.model", "llama");  // llama.cpp's name for SentencePiece BPE
  }
  for (int64_t id = static_cast<int64_t>(d.tokens.size()); id < vocab_size; ++id) {
    d.tokens.push_back("[PAD" + std::to_string(id) + "]");
    d.token_types.push_back(TokenizerDescription::unused);
    if (!d.scores.empty()) d.scores.push_back(-1e4f);  // below every piece: never chosen
  }
  for (size_t id = 0; id < d.tokens.size(); ++id)  // llama.cpp needs every text distinct
    if (d.tokens[id].empty()) d.tokens[id] = "[PAD" + std::to_string(id) + "]";
  w.add_strings("tokenizer.ggml.tokens", d.tokens);
  w.add_i32s("tokenizer.ggml.token_type", d.token_types);
  if (!d.scores.empty()) w.add_f32s("tokenizer.ggml.scores", d.scores);
  if (d.kind == TokenizerDescription::Kind::byte_level_bpe) w.add_strings("tokenizer.ggml.merges", d.merges);
  if (tok.bos_id() >= 0) w.add_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tok.bos_id()));
  if (tok.eos_id() >= 0) w.add_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tok.eos_id()));
  if (tok.pad_id() >= 0) w.add_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(tok.pad_id()));
  if (d.unk_id >= 0) w.add_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(d.unk_id));
  w.add_bool("tokenizer.ggml.add_bos_token", !d.prefix_ids.empty());
  w.add_bool("tokenizer.ggml.add_eos_token", !d.suffix_ids.empty());
  if (const ChatTemplate* t = tok.chat_template()) w.add_string("tokenizer.chat_template", t->text());
}

}  // namespace lmforge::data
