// tests/parallel/comm_unit_test.cpp -- single-process checks of parallel/comm.h's helpers: the
// start-up timeout that bounds blocking NCCL calls. Multi-rank collectives are comm_test.cpp's.
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "parallel/comm.h"

using lmforge::parallel::run_within;

TEST(RunWithin, ReturnsWhenTheWorkFinishesInTime) {
  int calls = 0;
  run_within(5.0, "quick work", [&] { ++calls; });
  EXPECT_EQ(calls, 1);
}

TEST(RunWithin, PassesTheWorksExceptionThrough) {
  EXPECT_THROW(run_within(5.0, "failing work", [] { throw std::runtime_error("no"); }), std::runtime_error);
}

TEST(RunWithinDeathTest, EndsTheProcessNamingTheCallWhenItHangs) {
  EXPECT_EXIT(run_within(0.2, "NCCL CommInitRank (rank 1)",
                         [] { std::this_thread::sleep_for(std::chrono::seconds(30)); }),
              ::testing::ExitedWithCode(1),
              "NCCL CommInitRank \\(rank 1\\) did not complete within parallel.timeout_s = 0.2 s");
}
