// tests/parallel/comm_test.cpp -- every collective of the MPI backend against values computed
// by hand from the rank numbers, run under mpirun -np 2 and -np 4.
#include <gtest/gtest.h>

#include "parallel/comm.h"
#include "tests/parallel/mpi_world.h"

using lmforge::parallel::ReduceOp;
using lmforge::testing::world;

TEST(Comm, AllreduceSumAvgMaxInEveryDtype) {
  const int n = world().size(), r = world().rank();
  const double sum = n * (n + 1) / 2.0;  // sum of (rank + 1)
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kLong, torch::kBFloat16}) {
    auto t = torch::tensor({1.0, 2.0}).mul(r + 1).to(dtype);
    world().allreduce(t, ReduceOp::sum);
    EXPECT_TRUE(torch::equal(t, torch::tensor({sum, 2 * sum}).to(dtype))) << dtype;
    auto m = torch::tensor({1.0, -1.0}).mul(r + 1).to(dtype);
    world().allreduce(m, ReduceOp::max);
    EXPECT_TRUE(torch::equal(m, torch::tensor({1.0 * n, -1.0}).to(dtype))) << dtype;
  }
  auto a = torch::full({3}, static_cast<float>(r + 1));
  world().allreduce(a, ReduceOp::avg);
  EXPECT_TRUE(torch::allclose(a, torch::full({3}, static_cast<float>(sum / n))));
}

TEST(Comm, AsyncAllreducesCanOverlapAndFinishInAnyOrder) {
  const int n = world().size(), r = world().rank();
  auto a = torch::full({1000}, static_cast<float>(r));
  auto b = torch::full({7}, 1.0f);
  auto wa = world().allreduce_async(a, ReduceOp::sum);
  auto wb = world().allreduce_async(b, ReduceOp::avg);
  wb->wait();
  wa->wait();
  EXPECT_TRUE(torch::equal(a, torch::full({1000}, static_cast<float>(n * (n - 1) / 2))));
  EXPECT_TRUE(torch::equal(b, torch::full({7}, 1.0f)));
}

TEST(Comm, EmptyTensorsAreFine) {
  auto e = torch::zeros({0});
  world().allreduce(e, ReduceOp::sum);
  EXPECT_EQ(e.numel(), 0);
}

TEST(Comm, BroadcastFromTheLastRank) {
  const int n = world().size(), r = world().rank();
  auto t = torch::full({4}, static_cast<int64_t>(r), torch::kLong);
  world().broadcast(t, n - 1);
  EXPECT_TRUE(torch::equal(t, torch::full({4}, static_cast<int64_t>(n - 1), torch::kLong)));
  EXPECT_EQ(lmforge::parallel::broadcast_string(world(), r == 0 ? "from rank 0" : "", 0), "from rank 0");
}

TEST(Comm, AllgatherConcatenatesInRankOrder) {
  const int n = world().size(), r = world().rank();
  auto out = world().allgather(torch::tensor({r, 10 * r}, torch::kInt));
  ASSERT_EQ(out.numel(), 2 * n);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(out[2 * i].item<int>(), i);
    EXPECT_EQ(out[2 * i + 1].item<int>(), 10 * i);
  }
}

// A buffer of the result's shape is filled in place (ZeRO keeps one across steps); any other is
// replaced by a new one of the right shape.
TEST(Comm, OutputBuffersThatFitAreFilledInPlace) {
  const int n = world().size(), r = world().rank();
  auto self = lmforge::parallel::make_self_comm();
  for (lmforge::parallel::Comm* comm : {&world(), self.get()}) {
    const int64_t ranks = comm->size();
    auto gathered = torch::full({2 * ranks}, -1.0f), reduced = torch::full({2}, -1.0f);
    const void* gathered_at = gathered.data_ptr();
    const void* reduced_at = reduced.data_ptr();
    auto mine = torch::tensor({1.0f * r, 10.0f * r});
    comm->allgather_async(mine, gathered)->wait();
    comm->reduce_scatter_async(torch::ones({2 * ranks}), reduced, ReduceOp::sum)->wait();
    EXPECT_EQ(gathered.data_ptr(), gathered_at);
    EXPECT_EQ(reduced.data_ptr(), reduced_at);
    EXPECT_FLOAT_EQ(gathered[2 * (ranks - 1) + 1].item<float>(), ranks == 1 ? 10.0f * r : 10.0f * (n - 1));
    EXPECT_FLOAT_EQ(reduced[1].item<float>(), static_cast<float>(ranks));
    auto wrong = torch::zeros({3}, torch::kDouble);
    comm->allgather_async(mine, wrong)->wait();
    EXPECT_EQ(wrong.numel(), 2 * ranks);
    EXPECT_EQ(wrong.scalar_type(), torch::kFloat);
  }
}

TEST(Comm, ReduceScatterGivesEachRankItsSummedBlock) {
  const int n = world().size(), r = world().rank();
  auto in = torch::arange(2 * n, torch::kFloat) + r;  // element i on rank q: i + q
  auto out = world().reduce_scatter(in, ReduceOp::sum);
  ASSERT_EQ(out.numel(), 2);
  const float rank_sum = n * (n - 1) / 2.0f;
  for (int j = 0; j < 2; ++j) EXPECT_FLOAT_EQ(out[j].item<float>(), n * static_cast<float>(2 * r + j) + rank_sum);
}

TEST(Comm, SplitMakesIndependentSubgroups) {
  const int n = world().size(), r = world().rank();
  auto sub = world().split(/*color=*/r % 2, /*key=*/r);
  EXPECT_EQ(sub->size(), (n + 1 - r % 2) / 2);
  EXPECT_EQ(sub->rank(), r / 2);
  auto t = torch::tensor({static_cast<int64_t>(r)});
  sub->allreduce(t, ReduceOp::sum);
  int64_t expected = 0;
  for (int q = r % 2; q < n; q += 2) expected += q;
  EXPECT_EQ(t.item<int64_t>(), expected);
  sub->barrier();
  world().barrier();
}

namespace {

TEST(Comm, EveryCollectiveHasANonBlockingVariantWaitedInAnyOrder) {
  const int r = world().rank(), n = world().size();
  auto b = torch::full({3}, static_cast<float>(r + 5));
  auto s = torch::full({2}, static_cast<double>(r));
  torch::Tensor gathered, scattered;
  // Posted together, waited in reverse order; bf16 travels through an fp32 staging buffer.
  auto wb = world().broadcast_async(b, n - 1);
  auto wg = world().allgather_async(torch::full({2}, static_cast<float>(r)).to(torch::kBFloat16), gathered);
  auto wr = world().reduce_scatter_async(torch::arange(2 * n, torch::kFloat), scattered, ReduceOp::avg);
  auto ws = world().allreduce_async(s, ReduceOp::max);
  auto wbar = world().barrier_async();
  wbar->wait();
  ws->wait();
  wr->wait();
  wg->wait();
  wb->wait();
  EXPECT_FLOAT_EQ(b[0].item<float>(), static_cast<float>(n - 1 + 5));
  ASSERT_EQ(gathered.scalar_type(), torch::kBFloat16);
  ASSERT_EQ(gathered.numel(), 2 * n);
  for (int i = 0; i < n; ++i) EXPECT_FLOAT_EQ(gathered[2 * i + 1].item<float>(), static_cast<float>(i));
  // Every rank holds arange(2n): the average of block r is the block itself.
  EXPECT_FLOAT_EQ(scattered[0].item<float>(), static_cast<float>(2 * r));
  EXPECT_FLOAT_EQ(scattered[1].item<float>(), static_cast<float>(2 * r + 1));
  EXPECT_DOUBLE_EQ(s[1].item<double>(), static_cast<double>(n - 1));
}

}  // namespace
