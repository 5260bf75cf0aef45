// tests/experiments/eval_metrics_test.cpp -- metric values against hand-computed numbers and
// against tests/tools/eval_metrics_ref.py (an independent Python implementation) on a held-out set.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "experiments/eval_metrics.h"

using namespace lmforge::experiments;

namespace {

const std::string kSource = LMFORGE_SOURCE_DIR;

nlohmann::json run_python_reference(const std::string& pairs) {
  std::string command = "/usr/bin/python3 " + kSource + "/tests/tools/eval_metrics_ref.py " + pairs;
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  EXPECT_EQ(pclose(pipe), 0) << command;
  return nlohmann::json::parse(out);
}

}  // namespace

TEST(EvalMetrics, Tokenize13aMatchesSacreBleuRules) {
  EXPECT_EQ(tokenize_13a("Hello, world!"), "Hello , world !");
  EXPECT_EQ(tokenize_13a("It costs $3,000.50."), "It costs $ 3,000.50 .");  // digits keep , and .
  EXPECT_EQ(tokenize_13a("1990-2000 e-mail"), "1990 - 2000 e-mail");       // dash split only after a digit
  EXPECT_EQ(tokenize_13a("Q3 &amp; Q4 &quot;x&quot;"), "Q3 & Q4 \" x \"");
  EXPECT_EQ(tokenize_13a("don't"), "don't");  // apostrophes are not split
}

TEST(EvalMetrics, BleuByHand) {
  // "this is a fest" vs "this is a test": 3/4 unigrams, 2/3 bigrams, 1/2 trigrams, 0/1 4-grams
  // ('exp' smoothing: 100 / (2 x 1) = 50). BLEU = (75 x 66.67 x 50 x 50)^(1/4) = 59.4604.
  BleuScore b = corpus_bleu({"this is a fest"}, {{"this is a test"}});
  EXPECT_NEAR(b.score, std::pow(75.0 * 200.0 / 3.0 * 50.0 * 50.0, 0.25), 1e-9);
  EXPECT_DOUBLE_EQ(b.brevity_penalty, 1.0);
  // Shorter hypothesis: every n-gram matches, BP = exp(1 - 5/4).
  b = corpus_bleu({"this is a test"}, {{"this is a test today"}});
  EXPECT_NEAR(b.score, 100.0 * std::exp(1.0 - 5.0 / 4.0), 1e-9);
  // Too short to have a 4-gram: sacreBLEU's corpus BLEU is 0 (no effective-order rescue).
  EXPECT_EQ(corpus_bleu({"this is a"}, {{"this is a"}}).score, 0.0);
  // No match at all scores 0 (sacreBLEU returns 0 rather than the smoothed value).
  EXPECT_EQ(corpus_bleu({"x y"}, {{"a b"}}).score, 0.0);
  // The closest of several references sets the length.
  b = corpus_bleu({"a b c d"}, {{"a b c d e f", "a b c d e"}});
  EXPECT_EQ(b.ref_len, 5);
}

TEST(EvalMetrics, RougeLByHand) {
  // pred "the cat sat", ref "the cat was sitting": LCS 2, P 2/3, R 2/4 -> F = 4/7.
  EXPECT_NEAR(rouge_l({"The cat sat."}, {"the CAT was sitting"}), 4.0 / 7.0, 1e-12);
  EXPECT_EQ(rouge_l({""}, {"anything"}), 0.0);
}

TEST(EvalMetrics, ExactMatchNormalisationOptions) {
  EXPECT_EQ(exact_match({"The  Answer!"}, {"answer"}), 1.0);
  NormalizeOptions keep_case;
  keep_case.lowercase = false;
  EXPECT_EQ(exact_match({"The  Answer!"}, {"answer"}, keep_case), 0.0);
  NormalizeOptions keep_articles;
  keep_articles.strip_articles = false;
  EXPECT_EQ(exact_match({"the answer"}, {"answer"}, keep_articles), 0.0);
  NormalizeOptions keep_punctuation;
  keep_punctuation.strip_punctuation = false;
  EXPECT_EQ(exact_match({"answer!"}, {"answer"}, keep_punctuation), 0.0);
  EXPECT_EQ(normalize_answer("  an  Apple, the end ", {}), "apple end");
}

TEST(EvalMetrics, TokenF1ByHand) {
  // pred "cat sat on mat", gold "cat is on mat" (articles dropped): 3 common, P = R = 3/4.
  EXPECT_NEAR(token_f1({"the cat sat on the mat"}, {"a cat is on a mat"}), 0.75, 1e-12);
  EXPECT_EQ(token_f1({""}, {""}), 1.0);
  EXPECT_EQ(token_f1({""}, {"x"}), 0.0);
}

TEST(EvalMetrics, LikelihoodMetrics) {
  EXPECT_NEAR(perplexity(10 * std::log(4.0), 10), 4.0, 1e-12);
  EXPECT_NEAR(bits_per_byte(8 * std::log(2.0), 4), 2.0, 1e-12);  // 8 bits over 4 bytes
  EXPECT_EQ(multiple_choice_accuracy({{-1.0, -0.5}, {-2.0, -3.0}, {-1.0, -1.0}}, {1, 1, 0}), 2.0 / 3.0);
}

TEST(EvalMetrics, HeldOutSetMatchesIndependentPython) {
  const std::string pairs = kSource + "/tests/fixtures/eval/heldout_pairs.jsonl";
  std::vector<std::string> predictions, references;
  std::vector<std::vector<std::string>> reference_lists;
  std::ifstream in(pairs);
  std::string line;
  while (std::getline(in, line)) {
    auto row = nlohmann::json::parse(line);
    predictions.push_back(row["prediction"]);
    references.push_back(row["reference"]);
    reference_lists.push_back({references.back()});
  }
  ASSERT_EQ(predictions.size(), 14u);
  nlohmann::json expected = run_python_reference(pairs);
  // The bar is 0.01 (BLEU points, ROUGE-L F); both sides compute in double from the same
  // integer counts, so agreement is far tighter and a tokenisation slip shows up as > 0.1.
  BleuScore b = corpus_bleu(predictions, reference_lists);
  EXPECT_NEAR(b.score, expected["bleu"].get<double>(), 1e-6);
  EXPECT_EQ(b.sys_len, expected["sys_len"].get<int64_t>());
  EXPECT_EQ(b.ref_len, expected["ref_len"].get<int64_t>());
  for (size_t n = 0; n < 4; ++n) EXPECT_NEAR(b.precisions[n], expected["bleu_precisions"][n].get<double>(), 1e-9);
  EXPECT_NEAR(rouge_l(predictions, references), expected["rouge_l"].get<double>(), 1e-9);
  EXPECT_NEAR(exact_match(predictions, references), expected["exact_match"].get<double>(), 1e-12);
  EXPECT_NEAR(token_f1(predictions, references), expected["f1"].get<double>(), 1e-9);
  // Recorded from the Python reference (2026-11): BLEU 41.28, ROUGE-L 0.7311.
  EXPECT_NEAR(b.score, 41.28, 0.01);
  EXPECT_NEAR(rouge_l(predictions, references), 0.7311, 0.0001);
}
