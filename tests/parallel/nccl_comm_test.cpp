// tests/parallel/nccl_comm_test.cpp -- the NCCL backend's collectives on CUDA tensors against
// hand-computed results. Skipped, with the reason, where there is no NCCL build or no GPU.
#include <gtest/gtest.h>

#include "parallel/comm.h"
#include "tests/parallel/mpi_world.h"

using namespace lmforge;
using lmforge::testing::world;

namespace {

class NcclComm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!parallel::nccl_available()) GTEST_SKIP() << "this build has no NCCL backend";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "LibTorch sees no CUDA device (CPU-only build or no GPU)";
    int device = world().rank() % static_cast<int>(torch::cuda::device_count());
    cuda_ = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA, device);
    nccl_ = parallel::make_nccl_comm(world(), device, 60);
  }
  torch::TensorOptions cuda_;
  std::unique_ptr<parallel::Comm> nccl_;
};

TEST_F(NcclComm, AllreduceSumAvgMax) {
  const int r = nccl_->rank(), n = nccl_->size();
  auto t = torch::tensor({1.0f + r, 10.0f * r}, cuda_);
  nccl_->allreduce(t, parallel::ReduceOp::sum);
  // sum over r of (1 + r) = n + n(n-1)/2; of 10r = 10 n(n-1)/2
  EXPECT_FLOAT_EQ(t[0].item<float>(), n + n * (n - 1) / 2.0f);
  EXPECT_FLOAT_EQ(t[1].item<float>(), 10.0f * n * (n - 1) / 2.0f);
  auto a = torch::full({3}, static_cast<float>(r), cuda_);
  nccl_->allreduce_async(a, parallel::ReduceOp::avg)->wait();
  EXPECT_FLOAT_EQ(a[2].item<float>(), (n - 1) / 2.0f);
  auto m = torch::tensor({static_cast<float>(r)}, cuda_);
  nccl_->allreduce(m, parallel::ReduceOp::max);
  EXPECT_FLOAT_EQ(m.item<float>(), n - 1.0f);
}

TEST_F(NcclComm, BroadcastAllgatherReduceScatter) {
  const int r = nccl_->rank(), n = nccl_->size();
  auto b = torch::full({4}, static_cast<float>(r + 7), cuda_);
  nccl_->broadcast(b, 0);
  EXPECT_FLOAT_EQ(b[3].item<float>(), 7.0f);
  auto g = nccl_->allgather(torch::full({2}, static_cast<float>(r), cuda_)).cpu();
  for (int i = 0; i < n; ++i) EXPECT_FLOAT_EQ(g[2 * i + 1].item<float>(), static_cast<float>(i));
  auto rs = nccl_->reduce_scatter(torch::arange(2 * n, cuda_), parallel::ReduceOp::sum).cpu();  // (2)
  EXPECT_FLOAT_EQ(rs[0].item<float>(), n * static_cast<float>(2 * r));
  EXPECT_FLOAT_EQ(rs[1].item<float>(), n * static_cast<float>(2 * r + 1));
}

}  // namespace
