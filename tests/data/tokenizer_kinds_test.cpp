// tests/data/tokenizer_kinds_test.cpp -- tokenizer.kind bpe from GPT-2's vocab.json + merges.txt
// (and the encoder.json + vocab.bpe spelling), special tokens from config, and SentencePiece
// .model files against ids spm_encode printed. The real GPT-2 check is gpt2_tokenizer_test.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/hf_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/tokenizer.h"
#include "core/errors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace lmforge;

namespace {

const std::string kFixtures = std::string(LMFORGE_SOURCE_DIR) + "/tests/fixtures/sentencepiece/";

class TokenizerKindsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_kinds_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) { std::ofstream((dir_ / name).string()) << text; }
  // The vocabulary of hf_tokenizer_test's tiny tokenizer, as GPT-2's two files: "hello world" ->
  // hello (11), Ġwor (14), l (2), d (7), by the merge ranks (worked by hand there).
  void write_gpt2_files(const std::string& vocab_name, const std::string& merges_name) {
    json vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"\xc4\xa0", 4}, {"w", 5}, {"r", 6}, {"d", 7},
                  {"he", 8}, {"ll", 9}, {"hell", 10}, {"hello", 11}, {"\xc4\xa0w", 12}, {"or", 13},
                  {"\xc4\xa0wor", 14}, {"<|endoftext|>", 15}};
    write(vocab_name, vocab.dump());
    write(merges_name, "#version: 0.2\nh e\nl l\nhe ll\nhell o\n\xc4\xa0 w\no r\n\xc4\xa0w or\n");
  }
  fs::path dir_;
};

TEST_F(TokenizerKindsTest, Gpt2VocabAndMergesFilesInBothSpellings) {
  for (auto [vocab, merges] : {std::pair{"vocab.json", "merges.txt"}, std::pair{"encoder.json", "vocab.bpe"}}) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_gpt2_files(vocab, merges);
    data::TokenizerConfig cfg;
    cfg.kind = "bpe";
    for (std::string path : {dir_.string(), (dir_ / vocab).string()}) {
      cfg.path = path;
      auto tok = data::make_tokenizer(cfg);
      EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{11, 14, 2, 7})) << path;
      EXPECT_EQ(tok->decode({11, 14, 2, 7}), "hello world");
      EXPECT_EQ(tok->piece(14), "\xc4\xa0wor");
      EXPECT_EQ(tok->eos_id(), 15) << "GPT-2's files name no special tokens: <|endoftext|> is bos and eos";
      EXPECT_EQ(tok->bos_id(), 15);
      EXPECT_EQ(tok->vocab_size(), 16);
    }
  }
}

TEST_F(TokenizerKindsTest, SpecialTokensFromConfigSplitTextAndGetNewIds) {
  write_gpt2_files("vocab.json", "merges.txt");
  data::SpecialTokens special;
  special.pad = "<pad>";
  special.extra = {"<|im_start|>", "<|im_end|>"};
  auto tok = data::load_bpe_files(dir_.string(), special);
  EXPECT_EQ(tok->vocab_size(), 19) << "three tokens appended after the 16 of the vocabulary";
  EXPECT_EQ(tok->pad_id(), 16);
  EXPECT_EQ(tok->encode("<|im_start|>hello<|im_end|> world"), (std::vector<int32_t>{17, 11, 18, 14, 2, 7}));
  EXPECT_EQ(tok->decode({17, 11, 18, 16, 15}), "<|im_start|>hello<|im_end|>")
      << "chat-role tokens decode as text; pad and eos do not";
  EXPECT_NE(tok->fingerprint(), data::load_bpe_files(dir_.string(), {})->fingerprint())
      << "other special tokens give other ids: the cache key must change";

  data::SpecialTokens eos_only;
  eos_only.eos = "hello";  // any vocabulary entry can be named
  EXPECT_EQ(data::load_bpe_files(dir_.string(), eos_only)->eos_id(), 11);
}

TEST_F(TokenizerKindsTest, BrokenGpt2FilesNameTheFileAndLine) {
  write_gpt2_files("vocab.json", "merges.txt");
  write("merges.txt", "#version: 0.2\nh e\nll\n");
  try {
    data::load_bpe_files(dir_.string(), {});
    FAIL() << "a merge without a space";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt:3: 'll' is not a merge 'a b'"), std::string::npos) << e.what();
  }
  fs::remove(dir_ / "merges.txt");
  try {
    data::load_bpe_files(dir_.string(), {});
    FAIL() << "vocab.json without merges.txt";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt: missing"), std::string::npos) << e.what();
  }
  fs::remove(dir_ / "vocab.json");
  EXPECT_THROW(data::load_bpe_files(dir_.string(), {}), InputError);
}

// Ids below were printed by spm_encode (sentencepiece 0.1.97) for these fixtures, trained by
// spm_train on corpus.txt beside them (identity normalization; the unigram one with the
// user-defined symbol <sep>, the BPE one with byte fallback). The double space checks
// remove_extra_whitespaces, "é" an unknown character (unigram: <unk> = 0; BPE: UTF-8 bytes).
TEST_F(TokenizerKindsTest, SentencePieceUnigramMatchesSpmEncode) {
  auto tok = data::load_tokenizer_path(kFixtures + "unigram.model");
  EXPECT_EQ(tok->encode("the quick fox<sep>runs  over"),
            (std::vector<int32_t>{7, 4, 5, 26, 20, 24, 27, 21, 16, 3, 14, 20, 19, 6, 5, 8, 12, 14}));
  EXPECT_EQ(tok->encode("h\xc3\xa9llo dog"), (std::vector<int32_t>{5, 46, 0, 9, 9, 8, 17}));
  EXPECT_EQ(tok->decode(tok->encode("the quick fox<sep>runs over")), "the quick fox<sep>runs over");
  EXPECT_EQ(tok->piece(16), "\xe2\x96\x81" "fox");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->pad_id(), -1);
}

TEST_F(TokenizerKindsTest, SentencePieceBpeMatchesSpmEncodeWithByteFallback) {
  data::TokenizerConfig cfg;
  cfg.kind = "sentencepiece";
  cfg.path = kFixtures + "bpe.model";
  auto tok = data::make_tokenizer(cfg);
  EXPECT_EQ(tok->encode("the quick fox<sep>runs  over"),
            (std::vector<int32_t>{261, 273, 296, 284, 283, 294, 291, 266, 271, 63, 276, 274, 295, 65, 278, 272, 276,
                                  273, 277, 264, 278}));
  EXPECT_EQ(tok->encode("h\xc3\xa9llo dog"), (std::vector<int32_t>{273, 279, 198, 172, 285, 285, 277, 265, 270}));
  std::string text = "Fox \xc3\xbc" "ber alles \xe6\x97\xa5\xe6\x9c\xac";
  EXPECT_EQ(tok->encode(text), (std::vector<int32_t>{273, 73, 271, 273, 198, 191, 289, 274, 278, 262, 285, 285, 274,
                                                     276, 273, 233, 154, 168, 233, 159, 175}));
  EXPECT_EQ(tok->decode(tok->encode(text)), text) << "byte pieces reassemble the UTF-8";
}

TEST_F(TokenizerKindsTest, SentencePieceSpecialTokensAndBrokenFiles) {
  data::SpecialTokens special;
  special.extra = {"<|user|>"};
  special.pad = "<sep>";
  auto tok = data::load_sentencepiece_model(kFixtures + "unigram.model", special);
  int32_t user = static_cast<int32_t>(tok->vocab_size()) - 1;
  EXPECT_EQ(tok->pad_id(), 3) << "<sep> is the model's own piece";
  EXPECT_EQ(tok->encode("<|user|>fox"), (std::vector<int32_t>{5, user, 44, 8, 41}))
      << "the dummy prefix, then the token whole, then 'fox' without a space: f o x";
  EXPECT_EQ(tok->decode({user, 16}), "<|user|> fox");

  write("broken.model", std::string("\x0a\xff\xff\xff\x0f", 5));  // a piece longer than the file
  try {
    data::load_sentencepiece_model((dir_ / "broken.model").string(), {});
    FAIL() << "a truncated model";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("broken.model: not a SentencePiece model"), std::string::npos) << e.what();
  }
}

}  // namespace
