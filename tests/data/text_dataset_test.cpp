// tests/data/text_dataset_test.cpp -- the HDF5 token cache (content-keyed, reused, atomic) and
// the window samplers; bad inputs name the key and the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "trainer/errors.h"

namespace fs = std::filesystem;
using namespace lmforge::data;

namespace {

class TextDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_data_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "cache");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    auto path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  std::string cache() const { return (dir_ / "cache").string(); }
  fs::path dir_;
  ByteTokenizer tok_;
};

TEST_F(TextDatasetTest, TokenizesEachFileAsADocumentEndedByEos) {
  write("a.txt", "hi");
  write("b.txt", "\xc3\xa9!");
  auto corpus = open_text_corpus({(dir_ / "*.txt").string()}, tok_, cache(), "data.train");
  std::vector<int64_t> expected = {'h', 'i', 257, 0xc3, 0xa9, '!', 257};
  EXPECT_EQ(std::vector<int64_t>(corpus.tokens.data_ptr<int64_t>(), corpus.tokens.data_ptr<int64_t>() + 7), expected);
  EXPECT_EQ(corpus.num_documents, 2);
  EXPECT_EQ(corpus.id.size(), 64u);
  EXPECT_TRUE(fs::exists(corpus.cache_path));
  EXPECT_EQ(fs::path(corpus.cache_path).extension(), ".h5");
}

TEST_F(TextDatasetTest, CacheIsReusedAndKeyedByContent) {
  auto path = write("a.txt", "some text");
  auto first = open_text_corpus({path}, tok_, cache(), "data.train");
  auto written = fs::last_write_time(first.cache_path);
  auto second = open_text_corpus({path}, tok_, cache(), "data.train");
  EXPECT_EQ(second.id, first.id);
  EXPECT_EQ(fs::last_write_time(second.cache_path), written) << "a hit must not rewrite the cache";
  EXPECT_TRUE(torch::equal(first.tokens, second.tokens));
  write("a.txt", "other text");
  auto changed = open_text_corpus({path}, tok_, cache(), "data.train");
  EXPECT_NE(changed.id, first.id);
  for (const auto& entry : fs::directory_iterator(cache()))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << "no temp file may be left behind";
}

TEST_F(TextDatasetTest, CorruptCacheFileIsRebuilt) {
  auto path = write("a.txt", "abc");
  auto first = open_text_corpus({path}, tok_, cache(), "data.train");
  std::ofstream(first.cache_path, std::ios::binary | std::ios::trunc) << "not hdf5";
  auto again = open_text_corpus({path}, tok_, cache(), "data.train");
  EXPECT_TRUE(torch::equal(first.tokens, again.tokens));
}

TEST_F(TextDatasetTest, MissingAndUnreadableInputsNameTheKeyAndFile) {
  auto missing = (dir_ / "missing.txt").string();
  try {
    open_text_corpus({missing}, tok_, cache(), "data.eval");
    FAIL() << "expected InputError";
  } catch (const lmforge::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("data.eval: no file matches '" + missing + "'"), std::string::npos) << e.what();
  }
  fs::create_directories(dir_ / "adir");
  EXPECT_THROW(open_text_corpus({(dir_ / "adir").string()}, tok_, cache(), "data.train"), lmforge::InputError);
}

TEST_F(TextDatasetTest, WindowSamplerShiftsTargetsAndIsSeeded) {
  auto tokens = torch::arange(100, torch::kLong);
  WindowSampler a(tokens, 8, 42), b(tokens, 8, 42), c(tokens, 8, 43);
  auto ba = a.next(4), bb = b.next(4), bc = c.next(4);
  EXPECT_EQ(ba.inputs.sizes(), (std::vector<int64_t>{4, 8}));
  EXPECT_TRUE(torch::equal(ba.targets, ba.inputs + 1));  // arange: the next token is id + 1
  EXPECT_TRUE(torch::equal(ba.inputs, bb.inputs));
  EXPECT_FALSE(torch::equal(ba.inputs, bc.inputs));
  EXPECT_LE(ba.targets.max().item<int64_t>(), 99);
}

TEST_F(TextDatasetTest, FixedBatchesAreConsecutiveWindowsCappedByCount) {
  auto tokens = torch::arange(50, torch::kLong);
  auto batches = fixed_batches(tokens, 10, 2, 5);  // (50-1)/10 = 4 windows -> 2 batches
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1].inputs[1][0].item<int64_t>(), 30);
  EXPECT_EQ(batches[1].targets[1][9].item<int64_t>(), 40);
  EXPECT_EQ(fixed_batches(tokens, 10, 2, 1).size(), 1u);
}

}  // namespace
