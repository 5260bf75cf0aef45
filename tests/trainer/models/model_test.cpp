// tests/trainer/models/model_test.cpp -- the two model families: causality, Hugging Face names and
// shapes, RoPE against a hand computation, grouped-query attention against expanded heads.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/models/model.h"

using namespace lmforge::trainer;

namespace {

ModelConfig small_config(const std::string& arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = arch == "llama" ? 2 : 0;
  c.max_seq_len = 32;
  return c;
}

std::map<std::string, std::vector<int64_t>> shapes_of(const CausalLM& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : m->named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

class CausalityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalityTest, ChangingTokenTNeverChangesEarlierLogits) {
  torch::manual_seed(0);
  auto model = build_model(small_config(GetParam()));
  torch::NoGradGuard no_grad;
  auto tokens = torch::randint(0, 50, {2, 16}, torch::kLong);
  auto before = model->forward(tokens);
  for (int64_t t : {0, 7, 15}) {
    auto changed = tokens.clone();
    changed.index_put_({torch::indexing::Slice(), t}, (tokens.index({torch::indexing::Slice(), t}) + 1) % 50);
    auto after = model->forward(changed);
    if (t > 0) {
      // Rows before t are computed from identical inputs; 1e-6 allows only float reassociation.
      auto prefix_diff = (before.narrow(1, 0, t) - after.narrow(1, 0, t)).abs().max().item<double>();
      EXPECT_LT(prefix_diff, 1e-6) << GetParam() << " t=" << t;
    }
    auto at_t = (before.narrow(1, t, 1) - after.narrow(1, t, 1)).abs().max().item<double>();
    EXPECT_GT(at_t, 1e-4) << "the change must reach position t itself";
  }
}
INSTANTIATE_TEST_SUITE_P(BothFamilies, CausalityTest, ::testing::Values("llama", "gpt2"));

TEST(ModelNames, LlamaFollowsHuggingFace) {
  auto c = small_config("llama");
  auto shapes = shapes_of(build_model(c));
  EXPECT_EQ(shapes["model.embed_tokens.weight"], (std::vector<int64_t>{50, 32}));
  EXPECT_EQ(shapes["model.layers.0.self_attn.q_proj.weight"], (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(shapes["model.layers.0.self_attn.k_proj.weight"], (std::vector<int64_t>{16, 32}));  // 2 kv heads x 8
  EXPECT_EQ(shapes["model.layers.0.self_attn.v_proj.weight"], (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(shapes["model.layers.0.self_attn.o_proj.weight"], (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(shapes["model.layers.1.mlp.gate_proj.weight"], (std::vector<int64_t>{128, 32}));
  EXPECT_EQ(shapes["model.layers.1.mlp.up_proj.weight"], (std::vector<int64_t>{128, 32}));
  EXPECT_EQ(shapes["model.layers.1.mlp.down_proj.weight"], (std::vector<int64_t>{32, 128}));
  EXPECT_EQ(shapes["model.layers.1.input_layernorm.weight"], (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes["model.layers.1.post_attention_layernorm.weight"], (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes["model.norm.weight"], (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes["lm_head.weight"], (std::vector<int64_t>{50, 32}));
  EXPECT_EQ(shapes.size(), 3u + 2u * 9u);
  c.tie_embeddings = true;
  EXPECT_EQ(shapes_of(build_model(c)).count("lm_head.weight"), 0u);
}

TEST(ModelNames, Gpt2FollowsHuggingFace) {
  auto c = small_config("gpt2");
  c.tie_embeddings = true;
  auto shapes = shapes_of(build_model(c));
  EXPECT_EQ(shapes["transformer.wte.weight"], (std::vector<int64_t>{50, 32}));
  EXPECT_EQ(shapes["transformer.wpe.weight"], (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(shapes["transformer.h.0.ln_1.weight"], (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes["transformer.h.0.ln_1.bias"], (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes["transformer.h.0.attn.c_attn.weight"], (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(shapes["transformer.h.0.attn.c_attn.bias"], (std::vector<int64_t>{96}));
  EXPECT_EQ(shapes["transformer.h.1.attn.c_proj.weight"], (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(shapes["transformer.h.1.mlp.c_fc.weight"], (std::vector<int64_t>{128, 32}));
  EXPECT_EQ(shapes["transformer.h.1.mlp.c_proj.bias"], (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes["transformer.ln_f.bias"], (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes.count("lm_head.weight"), 0u);
}

TEST(Rope, MatchesTheRotateHalfFormulaComputedByHand) {
  const int64_t d = 8, t = 5;
  const double theta = 10000.0;
  auto x = torch::randn({1, 1, t, d}, torch::kDouble);
  auto pos = torch::arange(t, torch::kLong).unsqueeze(0);
  auto y = apply_rope(x.to(torch::kFloat), pos, theta).to(torch::kDouble);
  auto xa = x.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  for (int64_t p = 0; p < t; ++p) {
    for (int64_t i = 0; i < d / 2; ++i) {
      double angle = p * std::pow(theta, -2.0 * i / d);
      double a = xa[0][0][p][i], b = xa[0][0][p][i + d / 2];
      // HF layout: pair (i, i + d/2) rotates by angle; fp32 math, so 1e-5.
      EXPECT_NEAR(ya[0][0][p][i], a * std::cos(angle) - b * std::sin(angle), 1e-5);
      EXPECT_NEAR(ya[0][0][p][i + d / 2], b * std::cos(angle) + a * std::sin(angle), 1e-5);
    }
  }
}

TEST(GroupedQueryAttention, EqualsFullAttentionWithEachKvHeadRepeated) {
  torch::manual_seed(1);
  auto gqa_cfg = small_config("llama");  // 4 query heads, 2 kv heads
  auto mha_cfg = gqa_cfg;
  mha_cfg.n_kv_heads = 4;
  auto gqa = build_model(gqa_cfg);
  auto mha = build_model(mha_cfg);
  torch::NoGradGuard no_grad;
  auto mha_params = mha->named_parameters();
  const int64_t head_dim = 8;
  for (const auto& p : gqa->named_parameters()) {
    auto target = mha_params[p.key()];
    bool is_kv = p.key().find("k_proj") != std::string::npos || p.key().find("v_proj") != std::string::npos;
    if (is_kv) {  // (2*D, C) -> (4*D, C): kv head h serves query heads 2h and 2h+1, as HF's repeat_kv
      target.copy_(p.value().view({2, head_dim, 32}).repeat_interleave(2, 0).reshape({4 * head_dim, 32}));
    } else {
      target.copy_(p.value());
    }
  }
  auto tokens = torch::randint(0, 50, {2, 12}, torch::kLong);
  EXPECT_TRUE(torch::allclose(gqa->forward(tokens), mha->forward(tokens), 1e-5, 1e-5));
}

TEST(Loss, IgnoresMaskedTargets) {
  auto logits = torch::randn({1, 3, 5});
  auto targets = torch::tensor({{1, -100, 4}}, torch::kLong);
  auto expected = (torch::log_softmax(logits[0][0], -1)[1] + torch::log_softmax(logits[0][2], -1)[4]) / -2.0;
  EXPECT_NEAR(causal_lm_loss(logits, targets).item<double>(), expected.item<double>(), 1e-6);
}

TEST(PositionIds, ResetPositionsChangeLlamaOutputs) {
  torch::manual_seed(2);
  auto model = build_model(small_config("llama"));
  torch::NoGradGuard no_grad;
  auto tokens = torch::randint(0, 50, {1, 8}, torch::kLong);
  auto shifted = (torch::arange(8, torch::kLong) + 3).unsqueeze(0);
  // RoPE is relative: shifting every position by 3 keeps attention scores, so outputs agree.
  EXPECT_TRUE(torch::allclose(model->forward(tokens), model->forward(tokens, shifted), 1e-4, 1e-4));
}

}  // namespace

// The seam LoRA and tensor parallelism use: a replaced layer is both in the module tree and the
// one the forward pass calls.
struct ScaledLinearImpl : LayerImpl {
  explicit ScaledLinearImpl(Layer base) : base(register_module("base", std::move(base))) {}
  torch::Tensor forward(const torch::Tensor& x) override { return 2.0 * base->forward(x); }
  Layer base;
};

TEST(ReplaceableLayers, AReplacedLayerIsRegisteredAndCalled) {
  torch::manual_seed(0);
  ModelConfig c;
  c.arch = "llama";
  c.vocab_size = 50, c.hidden_size = 32, c.n_layers = 2, c.n_heads = 4;
  auto model = build_model(c);
  std::map<std::string, Layer> layers;
  for (auto& [name, layer] : named_layers(*model)) layers[name] = layer;
  EXPECT_EQ(layers.size(), 2u * 7u + 2u) << "7 linears per layer, the embedding and the head";
  ASSERT_TRUE(layers.count("model.layers.1.mlp.down_proj"));
  auto tokens = torch::randint(50, {2, 5});
  auto before = model->forward(tokens);
  replace_layer(*model, "lm_head", std::make_shared<ScaledLinearImpl>(layers["lm_head"]));
  EXPECT_TRUE(model->forward(tokens).equal(2.0 * before));
  EXPECT_EQ(model->named_parameters().contains("lm_head.base.weight"), true);
  EXPECT_THROW(replace_layer(*model, "model.layers.0.self_attn.nope", layers["lm_head"]),
               std::invalid_argument);
  EXPECT_THROW(replace_layer(*model, "model.norm", layers["lm_head"]), std::invalid_argument);
}

TEST(ReplaceableLayers, TiedHeadUsesTheEmbeddingWeightWithoutOwningIt) {
  ModelConfig c;
  c.arch = "gpt2";
  c.vocab_size = 50, c.hidden_size = 32, c.n_layers = 1, c.n_heads = 4, c.tie_embeddings = true;
  auto model = build_model(c);
  auto params = model->named_parameters();
  EXPECT_FALSE(params.contains("lm_head.weight"));
  auto head = std::dynamic_pointer_cast<TiedHeadImpl>(named_layers(*model).back().second);
  ASSERT_TRUE(head);
  EXPECT_TRUE(head->weight.is_same(params["transformer.wte.weight"]));
}

// Packed documents with segments (and positions restarting per document) give each document the
// logits it has alone: nothing leaks across the boundary. fp32; 1e-5 covers summation order.
TEST_P(CausalityTest, SegmentsStopAttentionAcrossPackedDocuments) {
  torch::manual_seed(0);
  auto model = build_model(small_config(GetParam()));
  model->eval();
  auto a = torch::randint(50, {1, 5}), b = torch::randint(50, {1, 4});
  auto packed = torch::cat({a, b}, 1);
  auto positions = torch::tensor({0, 1, 2, 3, 4, 0, 1, 2, 3}).unsqueeze(0);
  auto segments = torch::tensor({0, 0, 0, 0, 0, 1, 1, 1, 1}).unsqueeze(0);
  auto isolated = model->forward(packed, positions, segments);
  EXPECT_TRUE(torch::allclose(isolated.narrow(1, 5, 4), model->forward(b), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(isolated.narrow(1, 0, 5), model->forward(a), 1e-5, 1e-5));
  auto leaky = model->forward(packed, positions);
  EXPECT_FALSE(torch::allclose(leaky.narrow(1, 5, 4), model->forward(b), 1e-5, 1e-5)) << "without segments b sees a";
}
