// tests/trainer/trainer_test.cpp -- the training loop in-process: loss falls, identical seeds give
// bit-identical losses (fp32 and bf16), a non-finite loss stops the run, eval perplexity = exp(loss),
// the loss is token-weighted over the whole batch whatever its split into micro-batches.
#include <gtest/gtest.h>

#include <cmath>

#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "parallel/comm.h"
#include "core/errors.h"
#include "trainer/trainer.h"
#include "tests/parallel/train_fixture.h"

using namespace lmforge;
using namespace lmforge::trainer;

namespace {

torch::Tensor synthetic_corpus() {
  // Structured, learnable text: a few sentences recombined by a fixed LCG.
  const char* words[] = {"the cat ", "sat on ", "a mat ", "and the ", "dog ran ", "far away. "};
  std::string text;
  uint32_t state = 7;
  for (int i = 0; i < 3000; ++i) {
    state = state * 1664525u + 1013904223u;
    text += words[(state >> 16) % 6];
  }
  auto ids = data::ByteTokenizer().encode(text);
  return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong);
}

struct TinyRun {
  std::vector<double> losses;
  EvalResult eval;
};

TinyRun train_tiny(const std::string& precision, int64_t steps, bool poison = false) {
  torch::manual_seed(5);
  ModelConfig mc;
  mc.arch = "llama";
  mc.hidden_size = 48;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.n_kv_heads = 2;
  mc.max_seq_len = 32;
  auto model = build_model(mc);
  if (poison) {
    torch::NoGradGuard no_grad;
    model->named_parameters()["model.norm.weight"].fill_(std::nan(""));
  }
  TrainerSettings s;
  s.train.max_steps = steps;
  s.train.micro_batch_size = 8;
  s.train.grad_accum_steps = 2;
  s.train.seq_len = 32;
  s.train.log_every = 1000;
  s.train.precision = precision == "bf16" ? Precision::bf16 : Precision::fp32;
  s.optim.lr = 3e-3;
  s.schedule.warmup_steps = 3;
  s.eval.max_batches = 2;
  auto corpus = synthetic_corpus();
  auto self = parallel::make_self_comm();
  Trainer trainer(model, s, data::WindowSampler(corpus, 32, 11), corpus, nullptr, *self);
  trainer.run();
  return {trainer.losses(), trainer.evaluate()};
}

TEST(Trainer, LossFallsOnLearnableText) {
  auto run = train_tiny("fp32", 40);
  ASSERT_EQ(run.losses.size(), 40u);
  // Bytes start near ln(258) = 5.55; 40 steps on six repeated phrases reach well under half.
  EXPECT_GT(run.losses.front(), 4.5);
  EXPECT_LT(run.losses.back(), 0.5 * run.losses.front());
  EXPECT_NEAR(run.eval.perplexity, std::exp(run.eval.loss), 1e-9);
  EXPECT_EQ(run.eval.tokens, 2 * 8 * 32);
}

TEST(Trainer, SameSeedGivesBitIdenticalLosses) {
  for (const char* precision : {"fp32", "bf16"}) {
    auto a = train_tiny(precision, 8), b = train_tiny(precision, 8);
    EXPECT_EQ(a.losses, b.losses) << precision;  // exact: determinism, not closeness
  }
}

TEST(Trainer, Bf16AutocastTrainsToo) {
  auto run = train_tiny("bf16", 40);
  EXPECT_LT(run.losses.back(), 0.5 * run.losses.front());
}

TEST(Trainer, NonFiniteLossStopsTheRun) {
  try {
    train_tiny("fp32", 3, /*poison=*/true);
    FAIL() << "expected TrainingError";
  } catch (const TrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("step 1: loss nan"), std::string::npos) << e.what();
  }
}

}  // namespace

namespace {

// Masked rows hold 0..16 targets each (some none): a mean per micro-batch would weight them
// unequally (and 1 x 16 would divide 0 by 0); the token-weighted loss does not see the split.
TEST(TokenWeightedLoss, EveryMicroBatchSplitGivesTheSameLossAndWeights) {
  auto self = parallel::make_self_comm();
  auto whole = lmforge::testing::train_masked_llama(*self, 3, 16, 1);
  for (auto [micro, accum] : {std::pair<int64_t, int64_t>{4, 4}, {1, 16}}) {
    auto split = lmforge::testing::train_masked_llama(*self, 3, micro, accum);
    ASSERT_EQ(split.losses.size(), 3u);
    // fp32: the same token losses and gradients summed in another order (per micro-batch, then
    // accumulated), ~1e-7 relative; after three AdamW steps the weights as one vector differ by
    // ~1e-7 (q/k projections, whose gradients at init are ~1e-3 of the others', up to 1.3e-6 per
    // tensor: AdamW normalises their reassociation noise too). A per-micro-batch mean weights these
    // rows unequally, and 1 x 16 would divide 0 by 0.
    EXPECT_NEAR(split.losses[0], whole.losses[0], 1e-6 * whole.losses[0]) << micro << " x " << accum;
    EXPECT_LT(lmforge::testing::relative_parameter_difference(split.model, whole.model), 1e-6)
        << micro << " x " << accum;
  }
}

TEST(TokenWeightedLoss, AGlobalBatchWithoutTargetsIsSkippedWithoutAnUpdate) {
  auto self = parallel::make_self_comm();
  auto skipped = lmforge::testing::train_masked_llama(*self, 2, 4, 1, /*all_masked=*/true);
  EXPECT_TRUE(skipped.losses.empty());
  auto initial = lmforge::testing::train_masked_llama(*self, 0, 4, 1);  // no step: the seeded weights
  EXPECT_EQ(lmforge::testing::max_parameter_difference(skipped.model, initial.model), 0.0);
}

}  // namespace
