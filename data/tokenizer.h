// data/tokenizer.h -- the tokenizer interface and the byte-level tokenizer.
// BPE and SentencePiece tokenizers arrive with the data pipeline; the interface stays.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lmforge::config {
class Section;
}

namespace lmforge::data {

struct TokenizerConfig {
  std::string kind = "byte";  // the only kind that needs no vocabulary file
};
void read_tokenizer_config(config::Section& s, TokenizerConfig& c);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // Names the tokenizer and its version; part of every token cache key.
  virtual std::string fingerprint() const = 0;
};

// Bytes 0..255 are ids 0..255; bos = 256, eos = 257.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return 258; }
  int32_t bos_id() const override { return 256; }
  int32_t eos_id() const override { return 257; }
  std::string fingerprint() const override { return "byte-v1"; }
};

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& cfg);

}  // namespace lmforge::data
