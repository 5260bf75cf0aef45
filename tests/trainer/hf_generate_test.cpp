// tests/trainer/hf_generate_test.cpp -- the sampling filters (greedy, temperature, top-k, top-p)
// on hand-made logits, seeded reproducibility, EOS stops and input checks of generate/score.
// Parity of greedy ids and scores with the Python reference is in hf_model_test.cpp.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <set>

#include "core/errors.h"
#include "trainer/generate.h"
#include "trainer/models/hf_model.h"

using namespace lmforge;
using namespace lmforge::trainer;

namespace {

// Logits whose softmax is exactly `probs`.
torch::Tensor logits_for(const std::vector<double>& probs) {
  return torch::tensor(probs, torch::kDouble).log().to(torch::kFloat);
}

std::set<int64_t> drawn(const torch::Tensor& logits, const SamplingConfig& s, int n = 400) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(s.seed);
  std::set<int64_t> seen;
  for (int i = 0; i < n; ++i) seen.insert(sample_next(logits, s, gen));
  return seen;
}

std::string fixture_dir(const std::string& name) { return std::string(LMFORGE_SOURCE_DIR) + "/tests/fixtures/hf/" + name; }

TEST(Sampling, GreedyIsArgmaxAndTemperatureAloneReachesEveryToken) {
  auto logits = logits_for({0.1, 0.5, 0.25, 0.15});
  SamplingConfig s;
  EXPECT_EQ(drawn(logits, s), (std::set<int64_t>{1}));
  s.temperature = 1.0;
  // 400 draws: the rarest token (p = 0.1) is missed with probability 0.9^400 ~ 5e-19.
  EXPECT_EQ(drawn(logits, s), (std::set<int64_t>{0, 1, 2, 3}));
}

TEST(Sampling, TopKKeepsTheKMostLikely) {
  auto logits = logits_for({0.1, 0.5, 0.25, 0.15});
  SamplingConfig s;
  s.temperature = 1.0;
  s.top_k = 2;
  EXPECT_EQ(drawn(logits, s), (std::set<int64_t>{1, 2}));
  s.top_k = 1;
  EXPECT_EQ(drawn(logits, s), (std::set<int64_t>{1}));
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingTheMass) {
  auto logits = logits_for({0.2, 0.5, 0.3});
  SamplingConfig s;
  s.temperature = 1.0;
  s.top_p = 0.7;  // 0.5 < 0.7, so the second token (0.3) is needed too; the third is not
  EXPECT_EQ(drawn(logits, s), (std::set<int64_t>{1, 2}));
  s.top_p = 0.01;  // the best token is always kept
  EXPECT_EQ(drawn(logits, s), (std::set<int64_t>{1}));
}

TEST(Sampling, LowTemperatureSharpensTowardsTheArgmax) {
  auto logits = logits_for({0.3, 0.4, 0.3});
  SamplingConfig s;
  s.temperature = 0.01;  // logit gaps of ln(4/3)/0.01 ~ 29: others have probability ~ e^-29
  EXPECT_EQ(drawn(logits, s), (std::set<int64_t>{1}));
}

TEST(Generate, SeededSamplingIsReproducibleAndSeedsDiffer) {
  auto model = load_hf_model(fixture_dir("llama_gqa"));
  SamplingConfig s;
  s.temperature = 1.5;
  s.max_new_tokens = 16;
  s.seed = 7;
  auto a = generate(*model, {1, 2, 3}, s), b = generate(*model, {1, 2, 3}, s);
  EXPECT_EQ(a.ids, b.ids);
  s.use_cache = false;
  EXPECT_EQ(generate(*model, {1, 2, 3}, s).ids, a.ids) << "the cache must not change what is sampled";
  s.seed = 8;
  EXPECT_NE(generate(*model, {1, 2, 3}, s).ids, a.ids);
}

TEST(Generate, StopsAfterAStopIdAndReportsWhy) {
  auto model = load_hf_model(fixture_dir("llama_gqa"));
  SamplingConfig s;
  s.max_new_tokens = 12;
  auto free_run = generate(*model, {1, 20, 30, 40}, s);
  EXPECT_EQ(free_run.finish_reason, "length");
  ASSERT_EQ(free_run.ids.size(), 12u);
  s.stop_ids = {free_run.ids[3]};
  auto stopped = generate(*model, {1, 20, 30, 40}, s);
  EXPECT_EQ(stopped.finish_reason, "eos");
  auto first = std::find(free_run.ids.begin(), free_run.ids.end(), free_run.ids[3]);
  EXPECT_EQ(stopped.ids, std::vector<int64_t>(free_run.ids.begin(), first + 1));
}

TEST(Generate, RejectsEmptyPromptsAndOutOfVocabularyIds) {
  auto model = load_hf_model(fixture_dir("gpt2"));
  EXPECT_THROW(generate(*model, {}, SamplingConfig{}), InputError);
  try {
    score_tokens(*model, {1, 64});
    FAIL() << "id 64 is outside a 64-token vocabulary";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 64 is outside the vocabulary [0, 64)"), std::string::npos);
  }
  EXPECT_THROW(score_tokens(*model, {1}), InputError);
}

}  // namespace
