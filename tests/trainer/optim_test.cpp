// tests/trainer/optim_test.cpp -- learning-rate schedule values, decay groups, clipping.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/models/model.h"
#include "trainer/optim.h"

using namespace lmforge::trainer;

TEST(Schedule, WarmupThenCosineToTheFloor) {
  ScheduleConfig c;
  c.kind = "cosine";
  c.warmup_steps = 10;
  c.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(lr_at(0, 110, 1.0, c), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(9, 110, 1.0, c), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(10, 110, 1.0, c), 1.0);
  EXPECT_NEAR(lr_at(10 + 99 / 2, 110, 1.0, c), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 49.0 / 99.0)), 1e-12);
  EXPECT_DOUBLE_EQ(lr_at(109, 110, 1.0, c), 0.1);
}

TEST(Schedule, LinearAndConstant) {
  ScheduleConfig c;
  c.kind = "linear";
  c.min_lr_ratio = 0.0;
  EXPECT_DOUBLE_EQ(lr_at(0, 11, 2.0, c), 2.0);
  EXPECT_DOUBLE_EQ(lr_at(5, 11, 2.0, c), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(10, 11, 2.0, c), 0.0);
  c.kind = "constant";
  EXPECT_DOUBLE_EQ(lr_at(7, 11, 2.0, c), 2.0);
}

TEST(Optimizer, NormsBiasesAndEmbeddingsAreNotDecayed) {
  ModelConfig mc;
  mc.arch = "gpt2";
  mc.vocab_size = 20;
  mc.hidden_size = 16;
  mc.n_layers = 1;
  mc.n_heads = 2;
  mc.max_seq_len = 8;
  auto model = build_model(mc);
  OptimConfig oc;
  oc.weight_decay = 0.1;
  auto opt = make_optimizer(*model, oc);
  ASSERT_EQ(opt->param_groups().size(), 2u);
  auto& decay = opt->param_groups()[0];
  auto& no_decay = opt->param_groups()[1];
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(decay.options()).weight_decay(), 0.1);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(no_decay.options()).weight_decay(), 0.0);
  // decayed: c_attn, attn.c_proj, c_fc, mlp.c_proj, lm_head weights
  EXPECT_EQ(decay.params().size(), 5u);
  for (const auto& p : decay.params()) EXPECT_EQ(p.dim(), 2);
  // not decayed: wte, wpe, 4 biases, ln_1/ln_2/ln_f weight+bias
  EXPECT_EQ(no_decay.params().size(), 2u + 4u + 6u);
  oc.decay_embeddings = true;
  EXPECT_EQ(make_optimizer(*model, oc)->param_groups()[0].params().size(), 7u);
}

TEST(ClipGradNorm, ReturnsTheNormAndClipsToMax) {
  torch::nn::Linear lin(2, 2);
  lin->weight.mutable_grad() = torch::full({2, 2}, 3.0);
  lin->bias.mutable_grad() = torch::full({2}, 4.0);
  double expected = std::sqrt(4 * 9.0 + 2 * 16.0);
  EXPECT_NEAR(clip_grad_norm(*lin, 0.0), expected, 1e-5);
  EXPECT_NEAR(clip_grad_norm(*lin, 1.0), expected, 1e-5);
  EXPECT_NEAR(clip_grad_norm(*lin, 0.0), 1.0, 1e-5);  // clipped in place by the previous call
  lin->bias.mutable_grad()[0] = std::nan("");
  EXPECT_FALSE(std::isfinite(clip_grad_norm(*lin, 1.0)));
}
