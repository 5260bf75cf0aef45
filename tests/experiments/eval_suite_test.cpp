// tests/experiments/eval_suite_test.cpp -- suite files and their errors, scoring a real (tiny,
// random) model against direct score_tokens sums, result rows, gates, and the report's SVG/PNG.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "experiments/eval_suite.h"
#include "experiments/report.h"
#include "parallel/comm.h"
#include "core/config_reader.h"
#include "core/errors.h"

using namespace lmforge;
using namespace lmforge::experiments;
namespace fs = std::filesystem;

namespace {

class EvalSuiteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_eval_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  std::string error_of(const std::string& suite_file) {
    try {
      load_eval_suites(suite_file);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
  std::string run_error(const std::string& suite_file) {
    auto suites = load_eval_suites(suite_file);
    try {
      run(suites[0]);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
  nlohmann::json run(const EvalSuiteConfig& suite) {
    torch::manual_seed(0);
    trainer::ModelConfig mc;
    mc.arch = "llama";
    mc.hidden_size = 32;
    mc.n_layers = 1;
    mc.n_heads = 2;
    mc.max_seq_len = 64;
    model_ = trainer::build_model(mc);
    EvalModel m{*model_, tokenizer_, {tokenizer_.eos_id()}, mc.max_seq_len};
    auto comm = parallel::make_self_comm();
    return run_eval_suite(suite, m, *comm, 7);
  }
  fs::path dir_;
  data::ByteTokenizer tokenizer_;
  trainer::CausalLM model_;
};

}  // namespace

TEST_F(EvalSuiteTest, UnknownMetricListsTheAvailableOnesWithItsLocation) {
  write("d.jsonl", "{\"prompt\": \"a\", \"reference\": \"b\"}\n");
  std::string suite = write("s.yaml", "suites:\n  - name: s\n    tasks:\n      - name: t\n        data: d.jsonl\n"
                                      "        metrics: [exact_match, blue]\n");
  std::string e = error_of(suite);
  EXPECT_NE(e.find(suite + ":6:"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown metric 'blue'; available: accuracy, bits_per_byte, bleu, exact_match, f1, perplexity, "
                   "rouge_l"),
            std::string::npos)
      << e;
}

TEST_F(EvalSuiteTest, MalformedLineAndMissingFieldAreNamed) {
  write("bad.jsonl", "{\"prompt\": \"a\", \"reference\": \"b\"}\n{\"prompt\": \"a\",\n");
  std::string suite = write("s.yaml", "suites:\n  - name: s\n    tasks:\n      - name: t\n        data: bad.jsonl\n"
                                      "        metrics: [f1]\n");
  std::string e = run_error(suite);
  EXPECT_NE(e.find((dir_ / "bad.jsonl").string() + ":2: malformed JSON line"), std::string::npos) << e;

  write("lacks.jsonl", "{\"question\": \"a\", \"reference\": \"b\"}\n");
  suite = write("s2.yaml", "suites:\n  - name: s\n    tasks:\n      - name: t\n        data: lacks.jsonl\n"
                           "        template: {name: qa, prompt: \"Q: {question} {topic}\"}\n        metrics: [f1]\n");
  e = run_error(suite);
  EXPECT_NE(e.find((dir_ / "lacks.jsonl").string() + ":1"), std::string::npos) << e;
  EXPECT_NE(e.find("needs field 'topic'"), std::string::npos) << e;
}

TEST_F(EvalSuiteTest, PerplexityAndChoiceMatchDirectScoring) {
  std::string text = "The quick brown fox jumps over the lazy dog, again and again and again.";
  write("t.txt", text);
  write("c.jsonl", "{\"context\": \"ab\", \"choices\": [\"cd\", \"efg\"], \"answer\": 1}\n");
  std::string suite = write("s.yaml", "suites:\n  - name: s\n    tasks:\n      - name: ppl\n        data: t.txt\n"
                                      "        metrics: [perplexity, bits_per_byte]\n        window: 16\n"
                                      "      - name: mc\n        data: c.jsonl\n        template: {name: c, prompt: \"{context}\"}\n"
                                      "        metrics: [accuracy]\n");
  nlohmann::json r = run(load_eval_suites(suite)[0]);
  // Independent sum: windows of 16 tokens overlapping by one, scored one by one.
  std::vector<int64_t> ids;
  for (int32_t id : tokenizer_.encode(text)) ids.push_back(id);
  double nll = 0;
  int64_t tokens = 0;
  for (size_t start = 0; start + 1 < ids.size(); start += 15) {
    std::vector<int64_t> w(ids.begin() + start, ids.begin() + std::min(ids.size(), start + 16));
    auto s = trainer::score_tokens(*model_, w);
    nll += s.nll;
    tokens += static_cast<int64_t>(s.logprobs.size());
  }
  EXPECT_EQ(tokens, static_cast<int64_t>(ids.size()) - 1);  // every token after the first, once
  const auto& ppl = r["tasks"]["ppl"]["metrics"];
  EXPECT_NEAR(ppl["perplexity"].get<double>(), std::exp(nll / tokens), 1e-9);
  EXPECT_NEAR(ppl["bits_per_byte"].get<double>(), nll / std::log(2.0) / text.size(), 1e-9);
  // A choice's score is the sum of its own tokens' log-probabilities after the context.
  auto lp = [&](const std::string& choice) {
    std::vector<int64_t> seq = {'a', 'b'};
    for (char ch : choice) seq.push_back(static_cast<unsigned char>(ch));
    auto s = trainer::score_tokens(*model_, seq);
    double sum = 0;
    for (size_t k = s.logprobs.size() - choice.size(); k < s.logprobs.size(); ++k) sum += s.logprobs[k];
    return sum;
  };
  const auto& example = r["tasks"]["mc"]["examples"][0];
  EXPECT_NEAR(example["choice_logprobs"][0].get<double>(), lp("cd"), 1e-9);
  EXPECT_NEAR(example["choice_logprobs"][1].get<double>(), lp("efg"), 1e-9);
  EXPECT_EQ(r["tasks"]["mc"]["metrics"]["accuracy"].get<double>(), lp("efg") > lp("cd") ? 1.0 : 0.0);
  EXPECT_EQ(r["tasks"]["ppl"]["dataset_sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(r["tasks"]["mc"]["template"]["version"].get<std::string>().size(), 16u);
}

TEST(EvalGate, ThresholdsAndMetricLookup) {
  nlohmann::json row = {{"step", 5}, {"suite", "qa"}, {"eval/qa/t/exact_match", 0.5}, {"eval/qa/t/f1", 0.7}};
  EXPECT_EQ(check_gate("exact_match>=0.5", row), "");
  EXPECT_NE(check_gate("exact_match>0.5", row), "");
  EXPECT_EQ(check_gate("eval/qa/t/f1<=0.7", row), "");
  EXPECT_NE(check_gate("f1>=0.75", row).find("eval/qa/t/f1 = 0.7"), std::string::npos);
  EXPECT_THROW(check_gate("bleu>=1", row), InputError);
  EXPECT_THROW(check_gate("f1=>1", row), InputError);
  EXPECT_THROW(check_gate("f1>=x", row), InputError);
}

TEST_F(EvalSuiteTest, ReportHasOneCurvePerRunAndPngs) {
  for (const char* run : {"a", "b"}) {
    fs::create_directories(dir_ / run);
    std::ofstream(dir_ / run / "meta.json") << nlohmann::json{{"run_id", run}, {"name", "r"}}.dump();
    std::ofstream(dir_ / run / "config.yaml") << "run:\n  name: <r>\n";
    std::ofstream m(dir_ / run / "metrics.jsonl");
    for (int step = 1; step <= 3; ++step)
      m << nlohmann::json{{"step", step}, {"loss", 3.0 / step}, {"lr", 1e-3}, {"grad_norm", 1.0}, {"tokens_per_s", 100}}.dump()
        << "\n";
    m << nlohmann::json{{"step", 3}, {"suite", "s"}, {"eval/s/t/f1", run[0] == 'a' ? 0.25 : 0.5}}.dump() << "\n";
  }
  auto files = write_report({(dir_ / "a").string(), (dir_ / "b").string()}, (dir_ / "out/r.html").string(), true);
  ASSERT_EQ(files.size(), 5u);  // the page, and PNGs of loss, lr, grad_norm, tokens_per_s (no eval_loss rows)
  std::ifstream in(files[0]);
  std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t polylines = 0;
  for (size_t at = html.find("<polyline"); at != std::string::npos; at = html.find("<polyline", at + 1)) ++polylines;
  EXPECT_EQ(polylines, 8u);  // 4 curves x 2 runs
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://") , html.find("http://www.w3.org/2000/svg"));  // the SVG namespace is no fetch
  EXPECT_NE(html.find("&lt;r&gt;"), std::string::npos);  // config text escaped
  EXPECT_NE(html.find("<td>eval/s/t/f1</td><td>0.2500</td><td>0.5000</td><td>+0.2500</td>"), std::string::npos);
  std::ifstream png(files[1], std::ios::binary);
  char signature[8];
  png.read(signature, 8);
  EXPECT_EQ(std::string(signature, 8), "\x89PNG\r\n\x1a\n");
}
