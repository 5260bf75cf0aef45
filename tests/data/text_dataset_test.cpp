// tests/data/text_dataset_test.cpp -- input file expansion (bad inputs name the key and the file)
// and the window samplers over raw token streams.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/text_dataset.h"
#include "core/errors.h"

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
  fs::path dir_;
};

TEST_F(TextDatasetTest, MissingAndUnreadableInputsNameTheKeyAndFile) {
  auto missing = (dir_ / "missing.txt").string();
  try {
    expand_patterns({missing}, "data.eval");
    FAIL() << "expected InputError";
  } catch (const lmforge::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("data.eval: no file matches '" + missing + "'"), std::string::npos) << e.what();
  }
  fs::create_directories(dir_ / "adir");
  EXPECT_THROW(read_text_file((dir_ / "adir").string(), "data.train"), lmforge::InputError);
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
