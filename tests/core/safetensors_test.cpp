// tests/trainer/safetensors_test.cpp -- round trips, the reference layout, and one hand-made
// malformed file per validation rule (each must be a clear InputError naming file and tensor).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
using namespace lmforge;

namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_st_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // A file with the given header text (no padding) followed by `data_bytes` zero bytes.
  std::string raw_file(const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
    auto path = (dir_ / "bad.safetensors").string();
    std::ofstream out(path, std::ios::binary);
    uint64_t len = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
    out << header << std::string(data_bytes, '\0');
    return path;
  }
  std::string error_of(const std::string& path) {
    try {
      load_safetensors(path);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripKeepsNamesDtypesShapesValuesAndMetadata) {
  auto path = (dir_ / "t.safetensors").string();
  NamedTensors in = {{"a.weight", torch::randn({3, 4})},
                     {"b", torch::randn({5}).to(torch::kBFloat16)},
                     {"ids", torch::arange(7, torch::kLong)},
                     {"mask", torch::tensor({true, false, true})},
                     {"scalar", torch::tensor(2.5)},
                     {"empty", torch::zeros({0, 3})},
                     {"strided", torch::randn({4, 4}).t()}};
  save_safetensors(path, in, {{"format", "pt"}});
  std::map<std::string, std::string> meta;
  auto out = load_safetensors(path, &meta);
  EXPECT_EQ(meta["format"], "pt");
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [name, t] : in) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& o) { return o.first == name; });
    ASSERT_NE(it, out.end()) << name;
    EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(it->second.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(it->second, t)) << name;
  }
}

TEST_F(SafetensorsTest, LayoutIsHeaderPaddedTo8AndDataSortedByDtypeSizeThenName) {
  auto path = (dir_ / "t.safetensors").string();
  save_safetensors(path, {{"z", torch::zeros({1}, torch::kFloat)}, {"a", torch::zeros({1}, torch::kByte)},
                          {"m", torch::zeros({1}, torch::kLong)}, {"b", torch::zeros({1}, torch::kFloat)}});
  std::ifstream in(path, std::ios::binary);
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(len_bytes[i]) << (8 * i);
  EXPECT_EQ(len % 8, 0u);
  std::string header(len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(len));
  auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["m"]["data_offsets"], nlohmann::json({0, 8}));   // I64 first
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json({8, 12}));  // then F32 by name
  EXPECT_EQ(j["z"]["data_offsets"], nlohmann::json({12, 16}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json({16, 17}));  // U8 last
  EXPECT_EQ(j["b"]["dtype"], "F32");
  EXPECT_EQ(j["b"]["shape"], nlohmann::json({1}));
}

TEST_F(SafetensorsTest, RejectsEveryMalformedLayoutWithTheFileAndTensorNamed) {
  struct Case {
    std::string header;
    size_t data;
    int64_t claimed_len;
    std::string expected;
  };
  std::vector<Case> cases = {
      {"", 0, 0, "header does not start with '{'"},
      {"{}", 0, 1ll << 40, "exceeds 100 MB"},
      {"{}", 0, 500, "runs past the end of the file"},
      {" {}", 0, -1, "header does not start with '{'"},
      {"{\"a\": ", 0, -1, "not valid JSON"},
      {R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4, -1, "tensor 'a': unknown dtype 'F33'"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, -1, "tensor 'a': shape x dtype size is 8"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, -1, "tensor 'a': shape holds"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       12, -1, "tensor 'b' starts at byte 8 but the previous tensor ends at 4 (hole)"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, -1, "(overlap)"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, -1, "tensors cover 4 of 8 data bytes"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 2, -1, "fall outside the data buffer"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
       4, -1, "tensor 'a' appears twice"},
      {R"({"__metadata__":{"format":1}})", 0, -1, "__metadata__ value 'format' is not a string"},
      {R"({"a":{"dtype":"F32","shape":[1]}})", 4, -1, "tensor 'a': needs dtype, shape and data_offsets"},
  };
  for (const auto& c : cases) {
    auto path = raw_file(c.header, c.data, c.claimed_len);
    auto err = error_of(path);
    EXPECT_NE(err.find(path), std::string::npos) << c.header << " -> " << err;
    EXPECT_NE(err.find(c.expected), std::string::npos) << c.header << " -> " << err;
  }
  std::ofstream((dir_ / "short").string()) << "abc";
  EXPECT_NE(error_of((dir_ / "short").string()).find("too short"), std::string::npos);
  EXPECT_NE(error_of((dir_ / "absent").string()).find("cannot open"), std::string::npos);
}

TEST_F(SafetensorsTest, FileViewsShareTheMappingAndOutliveTheFileObject) {
  auto path = (dir_ / "v.safetensors").string();
  auto w = torch::randn({4, 3});
  save_safetensors(path, {{"w", w}, {"ids", torch::arange(5, torch::kLong)}}, {{"format", "pt"}});
  torch::Tensor view;
  {
    SafetensorsFile file(path);
    EXPECT_EQ(file.names(), (std::vector<std::string>{"ids", "w"}));
    EXPECT_TRUE(file.contains("w"));
    EXPECT_FALSE(file.contains("v"));
    EXPECT_EQ(file.shape("w"), (std::vector<int64_t>{4, 3}));
    EXPECT_EQ(file.dtype("ids"), torch::kLong);
    EXPECT_EQ(file.metadata().at("format"), "pt");
    view = file.view("w");
    EXPECT_THROW(file.view("v"), InputError);
  }
  EXPECT_TRUE(torch::equal(view, w)) << "the view keeps the mapping alive after the file object is gone";
}

TEST_F(SafetensorsTest, MisalignedDataIsCopiedNotViewed) {
  // A 1-byte tensor first pushes the F32 tensor to an odd offset (the reference writer never
  // does this, a hand-made file may).
  std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  auto path = raw_file(header, 0);
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    float values[2] = {1.5f, -2.0f};
    out.put(7);
    out.write(reinterpret_cast<const char*>(values), sizeof values);
  }
  SafetensorsFile file(path);
  EXPECT_TRUE(torch::equal(file.view("b"), torch::tensor({1.5f, -2.0f})));
  EXPECT_EQ(file.view("a").item<uint8_t>(), 7);
}

TEST_F(SafetensorsTest, DirectoriesAreRejected) {
  EXPECT_NE(error_of(dir_.string()).find("not a regular file"), std::string::npos);
}

}  // namespace
