// data/tokenizer.h -- the tokenizer interface, its config section, the byte tokenizer and the
// factory. Vocabulary-file tokenizers live in hf_tokenizer.h (BPE) and sentencepiece_tokenizer.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lmforge::config {
class Section;
}

namespace lmforge::data {

class ChatTemplate;

// Special tokens named by their text; an empty one is taken from the tokenizer files.
struct SpecialTokens {
  std::string bos, eos, pad;
  std::vector<std::string> extra;  // chat-role and other tokens that must stay whole (e.g. <|im_start|>)
  bool empty() const { return bos.empty() && eos.empty() && pad.empty() && extra.empty(); }
};

struct TokenizerConfig {
  std::string kind = "byte";  // the only kind that needs no vocabulary file
  // bpe: tokenizer.json, vocab.json (merges.txt beside it), encoder.json (vocab.bpe beside it) or a
  // directory holding one of them; sentencepiece: a tokenizer.model or a directory holding one.
  std::string path;
  SpecialTokens special;
};
// Reads the section over `c`'s current values (the defaults). `kind: byte` given without a path
// drops a default path, so a model directory's tokenizer can be declined.
void read_tokenizer_config(config::Section& s, TokenizerConfig& c);
// The tokenizer files of an HF model directory as a config (bpe for tokenizer.json, vocab.json
// or encoder.json; sentencepiece for tokenizer.model alone), or the byte default when it has none.
TokenizerConfig tokenizer_of_model_dir(const std::string& dir);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const { return -1; }  // -1: none (most base models have no pad token)
  // The vocabulary entry of an id as the tokenizer files spell it (GPT-2: "Ġworld"); "" if none.
  virtual std::string piece(int32_t id) const = 0;
  // Names the tokenizer and its version; part of every token cache key.
  virtual std::string fingerprint() const = 0;
  // Text a chat template rendered: it writes bos/eos itself, so no post-processor ids are added.
  virtual std::vector<int32_t> encode_rendered(const std::string& text) const { return encode(text); }

  // The chat template beside the tokenizer files (data/chat_template.h); null when there is none.
  // One that does not parse throws its InputError here, where it is used, not when the tokenizer loads.
  const ChatTemplate* chat_template() const;
  // Reads `dir`'s chat template (tokenizer_config.json or chat_template.jinja), if any.
  void attach_chat_template(const std::string& dir);

 private:
  std::shared_ptr<const ChatTemplate> chat_template_;
  std::string chat_template_error_;
};

// Bytes 0..255 are ids 0..255; bos = 256, eos = 257.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return 258; }
  int32_t bos_id() const override { return 256; }
  int32_t eos_id() const override { return 257; }
  std::string piece(int32_t id) const override;
  std::string fingerprint() const override { return "byte-v1"; }
};

// Throws InputError for a missing or malformed vocabulary file, or a tokenizer without an
// end-of-sequence token (documents are separated by it).
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& cfg);

// A tokenizer from a path alone: a directory or file as TokenizerConfig::path describes, the
// kind told by the file name (tokenizer.model: sentencepiece, otherwise bpe).
std::unique_ptr<Tokenizer> load_tokenizer_path(const std::string& path, const SpecialTokens& special = {});

}  // namespace lmforge::data
