// tests/experiments/tensorboard_test.cpp -- event files read back by tests/tools/read_tfevents.py,
// an independent reader with its own CRC-32C: lengths, CRCs, tags, steps and values.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "experiments/tensorboard.h"

using namespace lmforge::experiments;
namespace fs = std::filesystem;

namespace {

// Runs the Python reader; returns its exit status and stdout (+ stderr).
std::pair<int, std::string> read_events(const std::string& file) {
  std::string command = "/usr/bin/python3 " + std::string(LMFORGE_SOURCE_DIR) + "/tests/tools/read_tfevents.py " + file + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  int status = pclose(pipe);
  return {WEXITSTATUS(status), out};
}

}  // namespace

TEST(TensorBoard, Crc32cKnownAnswers) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value (RFC 3720)
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST(TensorBoard, IndependentReaderSeesEveryScalar) {
  fs::path dir = fs::temp_directory_path() / ("lmforge_tb_" + std::to_string(getpid()));
  fs::remove_all(dir);
  std::string path;
  {
    TensorBoardWriter w(dir.string());
    path = w.path();
    w.add_row({{"step", 10}, {"loss", 2.5}, {"lr", 3e-4}, {"note", "not a number"}});
    w.add_row({{"step", 20}, {"eval_loss", 1.25}});
    w.add_scalar("long/" + std::string(200, 'x'), -7.0, 1LL << 40);  // multi-byte varints
  }
  auto [status, out] = read_events(path);
  ASSERT_EQ(status, 0) << out;
  auto events = nlohmann::json::parse(out);
  ASSERT_EQ(events.size(), 5u);  // header + loss + lr + eval_loss + long tag
  EXPECT_EQ(events[0]["file_version"], "brain.Event:2");
  EXPECT_EQ(events[1]["step"], 10);
  EXPECT_EQ(events[1]["scalars"]["loss"], 2.5);
  EXPECT_FLOAT_EQ(events[2]["scalars"]["lr"].get<float>(), 3e-4f);  // simple_value is a float
  EXPECT_EQ(events[3]["step"], 20);
  EXPECT_EQ(events[3]["scalars"]["eval_loss"], 1.25);
  EXPECT_EQ(events[4]["step"], 1LL << 40);
  EXPECT_EQ(events[4]["scalars"]["long/" + std::string(200, 'x')], -7.0);
  EXPECT_GT(events[1]["wall_time"].get<double>(), 1.7e9);

  // The reader can fail: one flipped data byte breaks the data CRC.
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(14);
  char byte = static_cast<char>(f.get() ^ 0x01);
  f.seekp(14);
  f.put(byte);
  f.close();
  auto [bad_status, bad_out] = read_events(path);
  EXPECT_EQ(bad_status, 1);
  EXPECT_NE(bad_out.find("record 0: data CRC mismatch"), std::string::npos) << bad_out;
  fs::remove_all(dir);
}
