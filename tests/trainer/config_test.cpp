// tests/trainer/config_test.cpp -- config loading: inheritance, overrides, resolved output, and
// one test per error class, each checking file:line:col, the key path and the message.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "experiments/config.h"
#include "core/config_reader.h"

namespace fs = std::filesystem;
using lmforge::load_config;
using lmforge::config::ConfigError;

namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_config_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  // The full error text of loading `path`, or "" when it loads.
  std::string errors_of(const std::string& path, const std::vector<std::string>& sets = {}) {
    try {
      load_config(path, sets);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

const char* kMinimal =
    "run:\n"
    "  name: t\n"
    "model:\n"
    "  arch: llama\n"
    "data:\n"
    "  train: a.txt\n"
    "train:\n"
    "  max_steps: 10\n";

TEST_F(ConfigTest, MinimalConfigLoadsWithDefaults) {
  auto cfg = load_config(write("c.yaml", kMinimal));
  EXPECT_EQ(cfg.run.name, "t");
  EXPECT_EQ(cfg.model.arch, "llama");
  EXPECT_EQ(cfg.train.max_steps, 10);
  EXPECT_EQ(cfg.train.seq_len, 128);
  ASSERT_EQ(cfg.data.sources.size(), 1u) << "data.train is shorthand for one text source per pattern";
  EXPECT_EQ(cfg.data.sources[0].paths, std::vector<std::string>{"a.txt"});
  EXPECT_EQ(cfg.data.sources[0].split, "train");
  EXPECT_EQ(cfg.data.cache_dir, "runs/cache");
}

TEST_F(ConfigTest, ResolvedYamlHoldsEverySectionAndReloadsToTheSameConfig) {
  auto path = write("c.yaml", kMinimal);
  auto cfg = load_config(path, {"optim.lr=0.01"});
  for (const char* section : {"run:", "model:", "tokenizer:", "data:", "optim:", "schedule:", "train:",
                              "parallel:", "checkpoint:", "eval:", "logging:"})
    EXPECT_NE(cfg.resolved_yaml.find(section), std::string::npos) << section;
  auto again = load_config(write("resolved.yaml", cfg.resolved_yaml));
  EXPECT_EQ(again.resolved_yaml, cfg.resolved_yaml);
  EXPECT_DOUBLE_EQ(again.optim.lr, 0.01);
}

TEST_F(ConfigTest, BaseInheritanceAndOverridePrecedence) {
  write("base.yaml", std::string(kMinimal) + "optim:\n  lr: 0.5\n  weight_decay: 0.2\n");
  auto path = write("child.yaml", "base: base.yaml\noptim:\n  lr: 0.25\ntrain:\n  seq_len: 32\n");
  auto cfg = load_config(path, {"train.seq_len=16", "train.seq_len=8"});
  EXPECT_DOUBLE_EQ(cfg.optim.lr, 0.25);           // child beats base
  EXPECT_DOUBLE_EQ(cfg.optim.weight_decay, 0.2);  // base kept where the child is silent
  EXPECT_EQ(cfg.train.max_steps, 10);
  EXPECT_EQ(cfg.train.seq_len, 8);                // the last --set wins
}

TEST_F(ConfigTest, UnknownKeyGivesLocationAndSuggestion) {
  auto path = write("c.yaml", std::string(kMinimal) + "  max_stesp: 5\n");
  auto err = errors_of(path);
  EXPECT_NE(err.find(path + ":9:3: error: train.max_stesp: unknown key 'max_stesp'; did you mean 'max_steps'?"),
            std::string::npos)
      << err;
}

TEST_F(ConfigTest, UnknownSectionGivesSuggestion) {
  auto err = errors_of(write("c.yaml", std::string(kMinimal) + "optimm:\n  lr: 1\n"));
  EXPECT_NE(err.find(":9:1: error: optimm: unknown section 'optimm'; did you mean 'optim'?"), std::string::npos) << err;
}

TEST_F(ConfigTest, DuplicateKey) {
  auto err = errors_of(write("c.yaml", std::string(kMinimal) + "  max_steps: 20\n"));
  EXPECT_NE(err.find(":9:3: error: train.max_steps: duplicate key (first defined at line 8)"), std::string::npos)
      << err;
}

TEST_F(ConfigTest, WrongType) {
  auto err = errors_of(write("c.yaml", std::string(kMinimal) + "optim:\n  lr: fast\n  grad_clip: [1]\n"));
  EXPECT_NE(err.find(":10:7: error: optim.lr: expected a number, got 'fast'"), std::string::npos) << err;
  EXPECT_NE(err.find(":11:14: error: optim.grad_clip: expected a number, got a list"), std::string::npos) << err;
}

TEST_F(ConfigTest, IntegerFieldRejectsFractionsAndBooleansAreNotNumbers) {
  auto err = errors_of(write("c.yaml", std::string(kMinimal) + "  seq_len: 2.5\noptim:\n  lr: true\n"));
  EXPECT_NE(err.find("train.seq_len: expected an integer, got '2.5'"), std::string::npos) << err;
  EXPECT_NE(err.find("optim.lr: expected a number, got 'true'"), std::string::npos) << err;
}

TEST_F(ConfigTest, OutOfRange) {
  auto err = errors_of(write("c.yaml", std::string(kMinimal) + "  micro_batch_size: 0\n"));
  EXPECT_NE(err.find(":9:21: error: train.micro_batch_size: value 0 out of range: must be >= 1"), std::string::npos)
      << err;
}

TEST_F(ConfigTest, EnumValueSuggestsTheClosestChoice) {
  auto err = errors_of(write("c.yaml", std::string(kMinimal) + "  precision: bf61\n"));
  EXPECT_NE(err.find("train.precision: 'bf61' is not one of: fp32, bf16; did you mean 'bf16'?"), std::string::npos)
      << err;
}

TEST_F(ConfigTest, MissingRequiredKey) {
  auto path = write("c.yaml", "run:\n  name: t\nmodel:\n  hidden_size: 64\ndata:\n  train: a\n");
  auto err = errors_of(path);
  EXPECT_NE(err.find(path + ":4:3: error: model.arch: missing required key 'arch'"), std::string::npos) << err;
  EXPECT_NE(err.find("train.max_steps: missing required key 'max_steps'"), std::string::npos) << err;
}

TEST_F(ConfigTest, MissingValue) {
  auto err = errors_of(write("c.yaml", std::string(kMinimal) + "  seq_len:\n"));
  EXPECT_NE(err.find("train.seq_len: missing value: expected an integer"), std::string::npos) << err;
}

TEST_F(ConfigTest, YamlSyntaxError) {
  auto path = write("c.yaml", "run:\n  name: [unclosed\nmodel:\n  arch: llama\n");
  auto err = errors_of(path);
  EXPECT_NE(err.find(path + ":"), std::string::npos) << err;
  EXPECT_NE(err.find("YAML syntax error"), std::string::npos) << err;
}

TEST_F(ConfigTest, EmptyFile) {
  auto path = write("c.yaml", "# only a comment\n");
  EXPECT_NE(errors_of(path).find(path + ":1:1: error: (top level): config file is empty"), std::string::npos);
}

TEST_F(ConfigTest, MissingFileAndMissingBase) {
  EXPECT_NE(errors_of((dir_ / "nope.yaml").string()).find("cannot open config file"), std::string::npos);
  auto path = write("c.yaml", std::string("base: missing.yaml\n") + kMinimal);
  auto err = errors_of(path);
  EXPECT_NE(err.find(path + ":1:7: error: base: cannot open config file"), std::string::npos) << err;
}

TEST_F(ConfigTest, BaseCycle) {
  write("a.yaml", "base: b.yaml\n");
  auto err = errors_of(write("b.yaml", "base: a.yaml\n"));
  EXPECT_NE(err.find("inheritance cycle"), std::string::npos) << err;
}

TEST_F(ConfigTest, BadSetPaths) {
  auto path = write("c.yaml", kMinimal);
  auto err = errors_of(path, {"train.max_stepz=3", "nosuch.key=1", "train.seq_len=abc", "novalue"});
  EXPECT_NE(err.find("<--set #1>:1:7: error: train.max_stepz: unknown key 'max_stepz'; did you mean 'max_steps'?"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("<--set #2>:1:1: error: nosuch: unknown section 'nosuch'"), std::string::npos) << err;
  EXPECT_NE(err.find("<--set #3>:1:15: error: train.seq_len: expected an integer, got 'abc'"), std::string::npos)
      << err;
  EXPECT_NE(err.find("<--set #4>:1:1: error: novalue: expected --set key.path=value"), std::string::npos) << err;
}

TEST_F(ConfigTest, SetIntoAScalarIsAnError) {
  auto err = errors_of(write("c.yaml", kMinimal), {"run.name.x=1"});
  EXPECT_NE(err.find("run.name: expected a string, got a mapping"), std::string::npos) << err;
}

TEST_F(ConfigTest, AllErrorsAreReportedTogether) {
  auto err = errors_of(write("c.yaml",
                             "run:\n  name: t\n  sede: 1\nmodel:\n  arch: llama\n  n_heads: -1\n"
                             "data:\n  train: a\ntrain:\n  max_steps: many\n"));
  EXPECT_NE(err.find("run.sede: unknown key"), std::string::npos) << err;
  EXPECT_NE(err.find("model.n_heads: value -1 out of range"), std::string::npos) << err;
  EXPECT_NE(err.find("train.max_steps: expected an integer"), std::string::npos) << err;
}

TEST_F(ConfigTest, CrossFieldRules) {
  auto err = errors_of(write("c.yaml",
                             "run:\n  name: t\nmodel:\n  arch: llama\n  hidden_size: 100\n  n_heads: 3\n"
                             "data:\n  train: a\ntrain:\n  max_steps: 1\n  seq_len: 4096\n"));
  EXPECT_NE(err.find("model.n_heads: hidden_size 100 is not divisible by n_heads 3"), std::string::npos) << err;
  EXPECT_NE(err.find("train.seq_len: train.seq_len 4096 exceeds model.max_seq_len 1024"), std::string::npos) << err;
}

TEST_F(ConfigTest, TensorParallelLayoutRulesNameTheKeysAndNumbers) {
  auto path = write("c.yaml", kMinimal);
  auto with = [](std::vector<std::string> sets) {  // 8 heads, 2 kv heads, the byte vocabulary (258)
    sets.insert(sets.begin(), {"model.n_heads=8", "model.n_kv_heads=2"});
    return sets;
  };
  auto cfg = load_config(path, with({"parallel.tp=2", "parallel.dp=auto"}));
  EXPECT_EQ(cfg.parallel.tp, 2);
  EXPECT_EQ(cfg.parallel.dp, 0);  // auto: world / tp
  EXPECT_EQ(load_config(path, with({"parallel.dp=3"})).parallel.dp, 3);
  EXPECT_EQ(load_config(path).parallel.tp, 1);
  auto err = errors_of(path, with({"parallel.tp=4"}));
  EXPECT_NE(err.find("parallel.tp: model.n_kv_heads 2 (key/value heads) is not divisible by parallel.tp 4"),
            std::string::npos) << err;
  EXPECT_EQ(err.find("model.n_heads 8"), std::string::npos) << err;
  err = errors_of(path, with({"parallel.tp=3", "parallel.dp=two", "parallel.zero=1"}));
  EXPECT_NE(err.find("model.n_heads 8 (attention heads) is not divisible by parallel.tp 3"), std::string::npos) << err;
  EXPECT_NE(err.find("model.intermediate_size 704 (MLP width) is not divisible by parallel.tp 3"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("model.vocab_size"), std::string::npos) << err;  // 258 = 3 x 86
  EXPECT_NE(err.find("parallel.dp: expected a positive integer or auto, got 'two'"), std::string::npos) << err;
  EXPECT_NE(err.find("parallel.zero: parallel.zero 1 with parallel.tp 3 is not supported"), std::string::npos) << err;
}

TEST(Suggest, PicksTheNearestWithinReach) {
  using lmforge::config::suggest;
  EXPECT_EQ(suggest("lerning_rate", {"lr", "learning_rate", "weight_decay"}), "learning_rate");
  EXPECT_EQ(suggest("zzzzzz", {"lr", "seed"}), "");
}

}  // namespace
