// data/tokenizer.h -- the tokenizer interface, its config section, the byte tokenizer and the
// factory. Vocabulary-file tokenizers live in hf_tokenizer.h (BPE) and sentencepiece_tokenizer.h.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
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

// A tokenizer spelled out for another format to hold (GGUF's tokenizer.ggml.*): its vocabulary and
// what encode() does around it.
struct TokenizerDescription {
  enum class Kind { byte_level_bpe, sentencepiece_bpe };
  // SentencePiece's piece types, which GGUF's token_type uses too.
  enum TokenType : int32_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };
  Kind kind = Kind::byte_level_bpe;
  std::vector<std::string> tokens;   // [id] as the files spell them ("\u0120world", "\u2581world")
  std::vector<int32_t> token_types;  // [id] TokenType
  std::vector<float> scores;         // [id] sentencepiece piece scores; empty for byte-level BPE
  std::vector<std::string> merges;   // byte-level BPE: "a b", the first merged first
  std::string pre_pattern;           // byte-level BPE: the pre-tokenizer regex ("": the text is one piece)
  bool add_prefix_space = false;     // a space is put before the text
  std::vector<int32_t> prefix_ids, suffix_ids;  // ids encode() puts around every text
  int32_t unk_id = -1;
};

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
  // The whole tokenizer as data, or nullopt for a kind that cannot be spelled out that way.
  virtual std::optional<TokenizerDescription> describe() const { return std::nullopt; }

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
  // A byte-level BPE without merges: byte b is GPT-2's printable symbol of b.
  std::optional<TokenizerDescription> describe() const override;
};

// Throws InputError for a missing or malformed vocabulary file, or a tokenizer without an
// end-of-sequence token (documents are separated by it).
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& cfg);

// A tokenizer from a path alone: a directory or file as TokenizerConfig::path describes, the
// kind told by the file name (tokenizer.model: sentencepiece, otherwise bpe).
std::unique_ptr<Tokenizer> load_tokenizer_path(const std::string& path, const SpecialTokens& special = {});

}  // namespace lmforge::data
