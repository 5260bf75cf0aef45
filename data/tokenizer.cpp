// data/tokenizer.cpp -- the byte tokenizer and the tokenizer factory.
// Vocabulary-file tokenizers (BPE, SentencePiece) are not here yet.
#include "data/tokenizer.h"

#include "trainer/config_reader.h"

namespace lmforge::data {

void read_tokenizer_config(config::Section& s, TokenizerConfig& c) {
  s.field("kind", c.kind, {"byte"});
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

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& cfg) {
  return std::make_unique<ByteTokenizer>();
}

}  // namespace lmforge::data
