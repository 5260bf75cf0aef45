// data/tokenizer.cpp -- the tokenizer config section, the byte tokenizer and the factory that
// picks a vocabulary-file tokenizer. BPE and SentencePiece code is in their own files.
#include "data/tokenizer.h"

#include <filesystem>

#include "data/chat_template.h"
#include "data/hf_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/utf8.h"
#include "core/config_reader.h"
#include "core/errors.h"

namespace lmforge::data {

namespace fs = std::filesystem;

void read_tokenizer_config(config::Section& s, TokenizerConfig& c) {
  s.field("kind", c.kind, {"byte", "bpe", "sentencepiece"});
  if (c.kind == "byte" && s.has("kind") && !s.has("path")) c = TokenizerConfig{};
  s.field("path", c.path);
  s.field("bos", c.special.bos);
  s.field("eos", c.special.eos);
  s.field("pad", c.special.pad);
  s.field("special_tokens", c.special.extra);
  if (c.kind == "byte") {  // resolved configs spell every key: only set values are errors
    if (!c.path.empty() || !c.special.empty())
      s.error(c.path.empty() ? "kind" : "path",
              "the byte tokenizer has no vocabulary file and fixed special ids; set kind: bpe or sentencepiece");
  } else if (c.path.empty()) {
    s.error("kind", "tokenizer.kind " + c.kind + " needs its vocabulary: set tokenizer.path");
  } else if (!fs::exists(c.path)) {
    s.error("path", "'" + c.path + "' does not exist (relative paths are from the working directory)");
  }
}

std::vector<int32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids)
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));  // special ids have no text
  return text;
}

std::string ByteTokenizer::piece(int32_t id) const {
  if (id == bos_id()) return "<bos>";
  if (id == eos_id()) return "<eos>";
  return id >= 0 && id < 256 ? std::string(1, static_cast<char>(id)) : "";
}

std::optional<TokenizerDescription> ByteTokenizer::describe() const {
  TokenizerDescription d;
  for (const std::string& symbol : byte_to_unicode()) d.tokens.push_back(symbol);
  d.tokens.push_back(piece(bos_id()));
  d.tokens.push_back(piece(eos_id()));
  d.token_types.assign(256, TokenizerDescription::normal);
  d.token_types.push_back(TokenizerDescription::control);
  d.token_types.push_back(TokenizerDescription::control);
  return d;  // no merges and no pattern: every byte is its own token whatever splits the text
}

namespace {

bool is_sentencepiece_path(const fs::path& p) {
  if (fs::is_directory(p))
    return fs::exists(p / "tokenizer.model") && !fs::exists(p / "tokenizer.json") && !fs::exists(p / "vocab.json") &&
           !fs::exists(p / "encoder.json");
  return p.extension() == ".model";
}

// The chat template in the tokenizer's directory (or beside its file), if any.
std::unique_ptr<Tokenizer> with_chat_template(std::unique_ptr<Tokenizer> tok, const fs::path& path) {
  tok->attach_chat_template((fs::is_directory(path) ? path : path.parent_path()).string());
  return tok;
}

}  // namespace

TokenizerConfig tokenizer_of_model_dir(const std::string& dir) {
  TokenizerConfig c;
  fs::path p(dir);
  bool bpe = fs::exists(p / "tokenizer.json") || fs::exists(p / "vocab.json") || fs::exists(p / "encoder.json");
  if (bpe || fs::exists(p / "tokenizer.model")) {
    c.kind = bpe ? "bpe" : "sentencepiece";
    c.path = dir;
  }
  return c;
}

const ChatTemplate* Tokenizer::chat_template() const {
  if (!chat_template_error_.empty()) throw InputError(chat_template_error_);
  return chat_template_.get();
}

void Tokenizer::attach_chat_template(const std::string& dir) {
  try {
    chat_template_ = load_chat_template(dir);
  } catch (const InputError& e) {
    chat_template_error_ = e.what();
  }
}

std::unique_ptr<Tokenizer> load_tokenizer_path(const std::string& path, const SpecialTokens& special) {
  if (!fs::exists(path)) throw InputError(path + ": no such tokenizer file or directory");
  if (is_sentencepiece_path(path)) {
    fs::path model = fs::is_directory(path) ? fs::path(path) / "tokenizer.model" : fs::path(path);
    return with_chat_template(load_sentencepiece_model(model.string(), special), path);
  }
  return with_chat_template(load_bpe_files(path, special), path);
}

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& cfg) {
  if (cfg.kind == "byte") return std::make_unique<ByteTokenizer>();
  std::unique_ptr<Tokenizer> tok;
  if (cfg.kind == "sentencepiece") {
    fs::path p(cfg.path);
    tok = load_sentencepiece_model((fs::is_directory(p) ? p / "tokenizer.model" : p).string(), cfg.special);
  } else {
    tok = load_bpe_files(cfg.path, cfg.special);
  }
  tok = with_chat_template(std::move(tok), cfg.path);
  if (tok->eos_id() < 0)
    throw InputError("tokenizer.eos: " + cfg.path + " names no end-of-sequence token; set tokenizer.eos to one");
  return tok;
}

}  // namespace lmforge::data
