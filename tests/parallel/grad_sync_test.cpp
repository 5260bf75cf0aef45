// tests/parallel/grad_sync_test.cpp -- bucketed data-parallel gradients against one process
// computing the whole global batch itself; accumulation with and without per-step sync.
#include <gtest/gtest.h>

#include "parallel/comm.h"
#include "parallel/grad_sync.h"
#include "tests/parallel/mpi_world.h"
#include "trainer/models/model.h"

using namespace lmforge;
using lmforge::testing::world;

namespace {

trainer::CausalLM make_model() {
  torch::manual_seed(3);  // every rank builds the same weights
  trainer::ModelConfig c;
  c.arch = "llama";
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 16;
  return trainer::build_model(c);
}

// The same global batch on every rank: (rows, 17) tokens.
torch::Tensor global_batch(int64_t rows, int seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(0, 40, {rows, 17}, gen, torch::kLong);
}

double loss_and_backward(trainer::CausalLM& m, const torch::Tensor& rows, double scale = 1.0) {
  auto loss = trainer::causal_lm_loss(m->forward(rows.narrow(1, 0, 16)), rows.narrow(1, 1, 16));
  (loss * scale).backward();
  return loss.item<double>();
}

double max_grad_difference(trainer::CausalLM& a, trainer::CausalLM& b) {
  double worst = 0;
  auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters())
    worst = std::max(worst, (p.value().grad() - pb[p.key()].grad()).abs().max().item<double>());
  return worst;
}

// fp32 gradients of one loss summed in a different order: agreement to ~1e-6 is expected; 1e-5
// leaves room for the avg division without hiding a missing or doubled bucket (errors ~1e-2).
constexpr double kTolerance = 1e-5;

class GradSyncTest : public ::testing::TestWithParam<double> {};

TEST_P(GradSyncTest, AveragedGradientsEqualTheFullBatchGradient) {
  const int n = world().size(), r = world().rank();
  const int64_t per_rank = 3;
  auto batch = global_batch(per_rank * n, 1);
  auto model = make_model(), reference = make_model();
  parallel::GradSync sync(*model, world(), GetParam());
  sync.begin_backward(true);
  loss_and_backward(model, batch.narrow(0, r * per_rank, per_rank));
  sync.finish();
  loss_and_backward(reference, batch);  // mean over all rows = mean of the ranks' means
  EXPECT_LT(max_grad_difference(model, reference), kTolerance);
}
// 1e-6 MiB: one bucket per parameter; 25 MiB: one bucket for all; 0.01 MiB: uneven buckets.
INSTANTIATE_TEST_SUITE_P(BucketSizes, GradSyncTest, ::testing::Values(1e-6, 0.01, 25.0));

TEST(GradSync, AccumulationWithoutSyncEqualsSyncEveryMicroStep) {
  const int n = world().size(), r = world().rank();
  auto batch = global_batch(4 * n, 2);
  auto rows = [&](int micro) { return batch.narrow(0, (r * 2 + micro) * 2, 2); };
  auto lazy = make_model(), eager = make_model();
  parallel::GradSync lazy_sync(*lazy, world(), 0.01), eager_sync(*eager, world(), 0.01);
  for (int micro = 0; micro < 2; ++micro) {
    lazy_sync.begin_backward(micro == 1);
    loss_and_backward(lazy, rows(micro), 0.5);
    eager_sync.begin_backward(true);
    loss_and_backward(eager, rows(micro), 0.5);
    eager_sync.finish();
  }
  lazy_sync.finish();
  EXPECT_LT(max_grad_difference(lazy, eager), kTolerance);
  auto full = make_model();
  loss_and_backward(full, batch);
  EXPECT_LT(max_grad_difference(lazy, full), kTolerance);
}

TEST(GradSync, FrozenParametersAreNeitherSyncedNorTouched) {
  auto model = make_model();
  auto params = model->named_parameters();
  params["model.embed_tokens.weight"].set_requires_grad(false);
  parallel::GradSync sync(*model, world(), 1e-6);
  EXPECT_EQ(sync.num_buckets(), params.size() - 1);  // one bucket per trainable parameter
  sync.begin_backward(true);
  loss_and_backward(model, global_batch(2, 3));
  sync.finish();
  EXPECT_FALSE(params["model.embed_tokens.weight"].grad().defined());
}

TEST(GradSync, BroadcastMakesEveryRankEqualToRankZero) {
  auto model = make_model();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(static_cast<float>(world().rank()));
  }
  parallel::GradSync sync(*model, world(), 25.0);
  sync.broadcast_parameters();
  auto reference = make_model();
  auto ref = reference->named_parameters();
  for (const auto& p : model->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), ref[p.key()])) << p.key();
}

}  // namespace
