// tests/parallel/data_parallel_train_test.cpp -- the Trainer over N ranks against one process
// with the same global batch: same losses and parameters after several steps; a NaN on one rank.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "parallel/comm.h"
#include "tests/parallel/mpi_world.h"
#include "tests/parallel/train_fixture.h"
#include "core/errors.h"

using namespace lmforge;
using lmforge::testing::world;

namespace {

TEST(DataParallelTraining, MatchesOneProcessWithTheSameGlobalBatch) {
  const int64_t n = world().size();
  auto parallel_run = lmforge::testing::train_tiny_gpt2(world(), 5, 2, 1);  // 2 sequences on each of n ranks
  auto self = parallel::make_self_comm();
  auto reference = lmforge::testing::train_tiny_gpt2(*self, 5, 2, n);  // 2 sequences x n micro-steps, one rank
  ASSERT_EQ(parallel_run.losses.size(), reference.losses.size());
  // fp32; the n slices' gradients are summed by MPI in another order than autograd accumulates
  // them: ~1e-7 relative per step. A wrong slice or a missing average moves the loss by >1e-3.
  for (size_t i = 0; i < reference.losses.size(); ++i)
    EXPECT_NEAR(parallel_run.losses[i], reference.losses[i], 1e-5) << "step " << i + 1;
  EXPECT_LT(lmforge::testing::max_parameter_difference(parallel_run.model, reference.model), 1e-5);
}

// The masked rows of train_fixture.h: a rank's share may hold few targets or none; the loss is
// the global batch's token-weighted mean either way.
TEST(DataParallelTraining, TokenWeightedLossDoesNotDependOnRanksOrMicroBatches) {
  const int64_t n = world().size();
  ASSERT_EQ(4 % n, 0) << "16 rows as 4 x 4 micro-batches split over " << n << " ranks";
  auto self = parallel::make_self_comm();
  auto reference = lmforge::testing::train_masked_llama(*self, 3, 16, 1);
  for (auto [micro, accum] : {std::pair<int64_t, int64_t>{16 / n, 1}, {4 / n, 4}}) {
    auto run = lmforge::testing::train_masked_llama(world(), 3, micro, accum);
    ASSERT_EQ(run.losses.size(), 3u);
    // fp32: token losses and gradients summed in another order (autograd per micro-batch, MPI
    // over ranks), ~1e-7 relative, the weights as one vector after three AdamW steps too (see
    // TokenWeightedLoss in tests/trainer/trainer_test.cpp). Per-rank means weight rows unequally.
    EXPECT_NEAR(run.losses[0], reference.losses[0], 1e-6 * reference.losses[0]) << n << " x " << micro << " x " << accum;
    EXPECT_LT(lmforge::testing::relative_parameter_difference(run.model, reference.model), 1e-6)
        << n << " x " << micro << " x " << accum;
  }
}

}  // namespace

namespace {

TEST(DataParallelTraining, ANanOnOneRankStopsEveryRankWithTheSameMessage) {
  torch::manual_seed(2);
  trainer::ModelConfig mc;
  mc.arch = "llama";
  mc.vocab_size = 30;
  mc.hidden_size = 16;
  mc.n_layers = 1;
  mc.n_heads = 2;
  mc.max_seq_len = 8;
  auto model = trainer::build_model(mc);
  trainer::TrainerSettings s;
  s.train.max_steps = 3;
  s.train.micro_batch_size = 2;
  s.train.seq_len = 8;
  auto tokens = torch::randint(0, 30, {500}, at::detail::createCPUGenerator(4), torch::kLong);
  trainer::Trainer t(model, s, data::WindowSampler(tokens, 8, 5), torch::Tensor(), nullptr, world());
  if (world().rank() == world().size() - 1) {  // after the start-up broadcast, on the last rank only
    torch::NoGradGuard no_grad;
    model->named_parameters()["model.norm.weight"].fill_(std::nan(""));
  }
  std::string message;
  try {
    t.run();
  } catch (const TrainingError& e) {
    message = e.what();
  }
  EXPECT_EQ(message.rfind("step 1: loss ", 0), 0u) << "rank " << world().rank() << ": " << message;
  EXPECT_NE(message.find("not finite"), std::string::npos) << message;
  // Every rank stopped at the same step with the same text.
  auto mine = torch::tensor({static_cast<int64_t>(std::hash<std::string>{}(message) >> 1)}, torch::kLong);
  auto all = world().allgather(mine);
  EXPECT_TRUE(torch::all(all == all[0]).item<bool>());
}

}  // namespace
