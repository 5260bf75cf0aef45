// tests/data/hf_tokenizer_test.cpp -- HF tokenizers: byte-level BPE merges worked by hand on a
// tiny tokenizer.json, special/added tokens and templates, UTF-8 round trips over the full byte
// table, the unsupported cases, and open_model_dir's pick.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "data/hf_tokenizer.h"
#include "experiments/run_models.h"
#include "trainer/generate.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace lmforge;

namespace {

class HfTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_tok_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const json& j) { std::ofstream((dir_ / name).string()) << j.dump(); }
  fs::path dir_;
};

// "hello world" -> pieces "hello", " world" -> byte symbols h e l l o / Ġ w o r l d; the merges
// below then give hello (11) and Ġwor l d (14, 2, 7), derived by hand from the merge ranks.
json tiny_tokenizer(bool array_merges = false) {
  json vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"\xc4\xa0", 4}, {"w", 5}, {"r", 6}, {"d", 7},
                {"he", 8}, {"ll", 9}, {"hell", 10}, {"hello", 11}, {"\xc4\xa0w", 12}, {"or", 13},
                {"\xc4\xa0wor", 14}};
  std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\xc4\xa0", "w"}, {"o", "r"}, {"\xc4\xa0w", "or"}};
  json m = json::array();
  for (const auto& [a, b] : merges) m.push_back(array_merges ? json::array({a, b}) : json(a + " " + b));
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", {{{"id", 20}, {"content", "<|eot|>"}, {"special", true}},
                            {{"id", 21}, {"content", "<s>"}, {"special", true}}}}};
}

TEST_F(HfTokenizerTest, ByteLevelBpeAppliesMergesByRank) {
  for (bool array_merges : {false, true}) {
    write("tokenizer.json", tiny_tokenizer(array_merges));
    auto tok = data::load_hf_tokenizer(dir_.string());
    ASSERT_TRUE(tok);
    EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{11, 14, 2, 7})) << array_merges;
    EXPECT_EQ(tok->decode({11, 14, 2, 7}), "hello world");
    EXPECT_EQ(tok->vocab_size(), 22);
  }
}

TEST_F(HfTokenizerTest, SpecialTokensSplitTheTextTemplatesAddThemAndDecodeSkipsThem) {
  json j = tiny_tokenizer();
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {21}}, {"tokens", {"<s>"}}}}}}};
  write("tokenizer.json", j);
  write("tokenizer_config.json", {{"bos_token", "<s>"}, {"eos_token", {{"content", "<|eot|>"}}}});
  auto tok = data::load_hf_tokenizer(dir_.string());
  EXPECT_EQ(tok->encode("hello<|eot|> world"), (std::vector<int32_t>{21, 11, 20, 14, 2, 7}));
  EXPECT_EQ(tok->encode_rendered("<s>hello<|eot|>"), (std::vector<int32_t>{21, 11, 20}))
      << "a chat template's text writes its own <s>: the post-processor adds no second one";
  EXPECT_EQ(tok->decode({21, 11, 20, 14, 2, 7}), "hello world");
  EXPECT_EQ(tok->bos_id(), 21);
  EXPECT_EQ(tok->eos_id(), 20);
  EXPECT_THROW(tok->encode("hi!"), InputError) << "'i' and '!' are not in this vocabulary";
}

TEST_F(HfTokenizerTest, FullByteTableRoundTripsAnyUtf8) {
  // GPT-2's table, written out independently: printable bytes map to their own code point, the
  // others to U+0100.. in byte order.
  json vocab = json::object();
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = printable ? b : next++;
    std::string s = cp < 0x80 ? std::string(1, static_cast<char>(cp))
                              : std::string{static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    vocab[s] = b;
  }
  write("tokenizer.json", {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
                           {"pre_tokenizer", {{"type", "Sequence"},
                                              {"pretokenizers",
                                               {{{"type", "Split"},
                                                 {"pattern", {{"Regex", R"(\p{L}+|\p{N}{1,3}|\s+|[^\s\p{L}\p{N}]+)"}}},
                                                 {"behavior", "Isolated"}},
                                                {{"type", "ByteLevel"}, {"use_regex", false}}}}}}});
  auto tok = data::load_hf_tokenizer(dir_.string());
  std::string text = "h\xc3\xa9llo w\xc3\xb6rld 12345\n\t\xe6\x97\xa5\xe6\x9c\xac \x01";
  auto ids = tok->encode(text);
  EXPECT_EQ(ids.size(), text.size()) << "no merges: one id per byte";
  EXPECT_EQ(ids[0], 'h');
  EXPECT_EQ(ids[1], 0xC3);
  EXPECT_EQ(tok->decode(ids), text);
}

// Llama 2 style: "hello world!" -> normalized "\u2581hello\u2581world!" -> words "\u2581hello",
// "\u2581world!". Merges by rank give \u2581hel lo (14, 15) and \u2581wor ld (18, 19); "!" is not in the
// vocabulary, so it falls back to its byte token <0x21> (3). Worked by hand from the ranks below.
json metaspace_tokenizer(bool normalizer_spelling) {
  const std::string sp = "\xe2\x96\x81";
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"<0x21>", 3}, {sp, 4}, {"h", 5}, {"e", 6}, {"l", 7},
                {"o", 8}, {"w", 9}, {"r", 10}, {"d", 11}, {sp + "h", 12}, {"el", 13}, {sp + "hel", 14}, {"lo", 15},
                {sp + "w", 16}, {"or", 17}, {sp + "wor", 18}, {"ld", 19}, {"<0xC3>", 20}, {"<0xA9>", 21}};
  json merges = {sp + " h", "e l", sp + "h el", "l o", sp + " w", "o r", sp + "w or", "l d"};
  json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"byte_fallback", true},
                       {"unk_token", "<unk>"}}},
            {"added_tokens", {{{"id", 1}, {"content", "<s>"}, {"special", true}},
                              {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
            {"post_processor", {{"type", "TemplateProcessing"},
                                {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                                {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}}}}}}}};
  if (normalizer_spelling) {
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", {{{"type", "Prepend"}, {"prepend", sp}},
                                        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}};
    j["pre_tokenizer"] = nullptr;
  } else {
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", sp}, {"add_prefix_space", true}};
  }
  return j;
}

TEST_F(HfTokenizerTest, SentencePieceStyleBpeUsesMetaspaceAndByteFallback) {
  for (bool normalizer_spelling : {true, false}) {
    write("tokenizer.json", metaspace_tokenizer(normalizer_spelling));
    write("tokenizer_config.json", {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
    auto tok = data::load_hf_tokenizer(dir_.string());
    ASSERT_TRUE(tok);
    EXPECT_EQ(tok->encode("hello world!"), (std::vector<int32_t>{1, 14, 15, 18, 19, 3})) << normalizer_spelling;
    EXPECT_EQ(tok->decode({1, 14, 15, 18, 19, 3}), "hello world!");
    EXPECT_EQ(tok->encode("h\xc3\xa9"), (std::vector<int32_t>{1, 12, 20, 21})) << "e-acute: two byte tokens";
    EXPECT_EQ(tok->decode({12, 20, 21, 2}), "h\xc3\xa9");
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->eos_id(), 2);
  }
}

TEST_F(HfTokenizerTest, UnsupportedOrMissingTokenizers) {
  EXPECT_EQ(data::load_hf_tokenizer(dir_.string()), nullptr);
  write("tokenizer.json", {{"model", {{"type", "Unigram"}, {"vocab", json::array()}}}});
  try {
    data::load_hf_tokenizer(dir_.string());
    FAIL() << "a Unigram tokenizer.json is not implemented";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: a Unigram tokenizer is not supported (BPE is)"),
              std::string::npos)
        << e.what();
  }
  write("tokenizer.json", {{"model", {{"type", "BPE"}, {"vocab", json::object()}}}, {"pre_tokenizer", nullptr}});
  try {
    data::load_hf_tokenizer(dir_.string());
    FAIL() << "a BPE with neither byte-level nor U+2581 spaces";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: neither a byte-level BPE"), std::string::npos) << e.what();
  }
  fs::remove(dir_ / "tokenizer.json");
  std::ofstream((dir_ / "tokenizer.model").string()) << "sp";
  EXPECT_THROW(data::load_hf_tokenizer(dir_.string()), InputError);
  fs::remove(dir_ / "tokenizer.model");
  std::ofstream((dir_ / "tokenizer.json").string()) << "{";
  EXPECT_THROW(data::load_hf_tokenizer(dir_.string()), InputError);
}

TEST_F(HfTokenizerTest, ModelDirectoriesUseTheirTokenizerForText) {
  fs::copy(std::string(LMFORGE_SOURCE_DIR) + "/tests/fixtures/hf/gpt2", dir_ / "m");
  std::ofstream((dir_ / "m" / "tokenizer.json").string()) << tiny_tokenizer().dump();
  auto m = experiments::open_model_dir((dir_ / "m").string());
  ASSERT_TRUE(m.tokenizer);
  auto ids = m.tokenizer->encode("hello world");
  EXPECT_EQ(trainer::score_tokens(*m.model, std::vector<int64_t>(ids.begin(), ids.end())).logprobs.size(), 3u);
}

}  // namespace
