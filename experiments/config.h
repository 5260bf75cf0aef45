// experiments/config.h -- the whole config: every module's section struct, assembled and validated
// in one pass. The binding machinery is config_reader.h; each section's keys live in its module.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/pipeline.h"
#include "data/tokenizer.h"
#include "experiments/eval_suite.h"
#include "experiments/run_record.h"
#include "parallel/launcher.h"
#include "trainer/peft/peft_config.h"
#include "trainer/models/model.h"
#include "trainer/optim.h"
#include "trainer/trainer.h"

namespace lmforge {

struct Config {
  experiments::RunConfig run;
  trainer::ModelConfig model;
  data::TokenizerConfig tokenizer;
  data::DataConfig data;
  trainer::PeftConfig peft;
  trainer::OptimConfig optim;
  trainer::ScheduleConfig schedule;
  trainer::TrainConfig train;
  parallel::ParallelConfig parallel;
  trainer::CheckpointConfig checkpoint;
  trainer::EvalConfig eval;
  std::vector<experiments::EvalSuiteConfig> eval_suites;  // eval.suites: run at every eval point
  experiments::LoggingConfig logging;

  std::string source_file;    // the file named on the command line
  std::string resolved_yaml;  // every key with its final value, defaults included
};

// Loads `path` (with its base: chain) and the --set overrides, validates every section and
// throws config::ConfigError listing every problem as file:line:col: key.path: message.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The tokenizer a config trains with: model.from's own (its ids are the ones the weights know)
// wins over tokenizer.kind.
std::unique_ptr<data::Tokenizer> make_config_tokenizer(const Config& cfg);

// Leaf-by-leaf differences between two resolved configs, as "key.path: A vs B" lines.
std::vector<std::string> config_differences(const std::string& yaml_a, const std::string& yaml_b);

}  // namespace lmforge
