// tests/parallel/launcher_test.cpp -- the device layout rule: more ranks on a node than GPUs is a
// clear error naming both numbers and CUDA_VISIBLE_DEVICES, before any collective. Pure checks.
#include <gtest/gtest.h>

#include <string>

#include "parallel/launcher.h"

using lmforge::parallel::device_layout_error;

TEST(DeviceLayout, AsManyRanksAsGpusFit) {
  EXPECT_EQ(device_layout_error(1, 1, nullptr), "");
  EXPECT_EQ(device_layout_error(4, 8, "0,1,2,3,4,5,6,7"), "");
}

TEST(DeviceLayout, MoreRanksThanGpusNamesTheNumbersAndTheWayOut) {
  std::string m = device_layout_error(2, 1, "0");
  EXPECT_NE(m.find("2 ranks on this node but 1 visible GPU(s)"), std::string::npos) << m;
  EXPECT_NE(m.find("CUDA_VISIBLE_DEVICES='0'"), std::string::npos) << m;
  EXPECT_NE(m.find("train.device: cpu"), std::string::npos) << m;
  EXPECT_NE(m.find("at most 1 ranks per node"), std::string::npos) << m;
  EXPECT_NE(device_layout_error(4, 2, nullptr).find("CUDA_VISIBLE_DEVICES=unset"), std::string::npos);
}
