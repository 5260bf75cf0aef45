// launch/main.cpp -- the lmforge CLI: sub-commands, exit codes, and the train flow's wiring.
// The only main(). Work is done by the library; this file only orders it.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "experiments/run_record.h"
#include "parallel/launcher.h"
#include "trainer/config.h"
#include "trainer/config_reader.h"
#include "trainer/errors.h"
#include "trainer/trainer.h"

namespace {

using namespace lmforge;

constexpr int kExitOk = 0, kExitFailure = 1, kExitBadInput = 2;

void check_corpus_length(const data::TokenCorpus& corpus, int64_t seq_len, const std::string& key) {
  if (corpus.tokens.numel() <= seq_len)
    throw InputError(key + ": the inputs hold " + std::to_string(corpus.tokens.numel()) +
                     " tokens, fewer than train.seq_len + 1 = " + std::to_string(seq_len + 1));
}

int train(const std::string& config_path, const std::vector<std::string>& sets,
          const std::vector<std::string>& argv) {
  Config cfg = load_config(config_path, sets);
  parallel::LaunchEnv env = parallel::detect_launch_env();
  if (env.world_size > 1)
    throw InputError("started as " + std::to_string(env.world_size) + " ranks by " + env.launcher +
                     ", but this build trains on a single process only; start one process");
  int threads = parallel::configure_threads(cfg.parallel, env, cfg.train.precision == "bf16");

  auto tokenizer = data::make_tokenizer(cfg.tokenizer);
  data::TokenCorpus train_corpus = data::open_text_corpus(cfg.data.train, *tokenizer, cfg.data.cache_dir, "data.train");
  check_corpus_length(train_corpus, cfg.train.seq_len, "data.train");
  data::TokenCorpus eval_corpus;
  if (!cfg.data.eval.empty()) {
    eval_corpus = data::open_text_corpus(cfg.data.eval, *tokenizer, cfg.data.cache_dir, "data.eval");
    check_corpus_length(eval_corpus, cfg.train.seq_len, "data.eval");
  }

  experiments::RunRecord record = experiments::RunRecord::create(cfg.run, cfg.resolved_yaml, argv);
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  trainer::CausalLM model = trainer::build_model(cfg.model);
  record.set_meta("world", {{"launcher", env.launcher}, {"world_size", env.world_size}, {"threads", threads}});
  record.set_meta("datasets", {{"train", {{"id", train_corpus.id}, {"tokens", train_corpus.tokens.numel()},
                                          {"documents", train_corpus.num_documents}}},
                               {"eval", eval_corpus.id.empty() ? nlohmann::json(nullptr)
                                                               : nlohmann::json{{"id", eval_corpus.id},
                                                                                {"tokens", eval_corpus.tokens.numel()}}}});
  record.set_meta("model", {{"arch", cfg.model.arch}, {"parameters", model->num_parameters()}});
  std::fprintf(stderr, "run %s: %s model, %lld parameters, %lld train tokens, %d threads\n", record.dir().c_str(),
               cfg.model.arch.c_str(), static_cast<long long>(model->num_parameters()),
               static_cast<long long>(train_corpus.tokens.numel()), threads);

  trainer::TrainerSettings settings{cfg.train, cfg.optim, cfg.schedule, cfg.eval, cfg.checkpoint, false};
  settings.live_progress = cfg.logging.progress == "always" || (cfg.logging.progress == "auto" && isatty(2));
  data::WindowSampler sampler(train_corpus.tokens, cfg.train.seq_len, static_cast<uint64_t>(cfg.run.seed));
  trainer::Trainer trainer(model, settings, std::move(sampler), eval_corpus.tokens, &record);
  try {
    trainer.run();
  } catch (const std::exception& e) {
    record.finish("failed", e.what());
    throw;
  }
  record.finish("completed");
  std::printf("%s\n", record.dir().c_str());
  return kExitOk;
}

int config_command(bool show, const std::string& path, const std::vector<std::string>& sets) {
  Config cfg = load_config(path, sets);
  if (show) {
    std::cout << cfg.resolved_yaml;
  } else {
    std::cout << path << ": ok\n";
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lmforge: train and fine-tune decoder-only language models"};
  app.require_subcommand(1);
  std::vector<std::string> args(argv, argv + argc);

  std::string config_path;
  std::vector<std::string> sets;
  auto add_config_args = [&](CLI::App* cmd) {
    cmd->add_option("config", config_path, "YAML config file")->required();
    cmd->add_option("--set", sets, "override a key: --set train.max_steps=100 (repeatable)")
        ->allow_extra_args(false)
        ->take_all();
  };
  CLI::App* train_cmd = app.add_subcommand("train", "train a model from a config");
  add_config_args(train_cmd);
  CLI::App* config_cmd = app.add_subcommand("config", "check or print a config");
  config_cmd->require_subcommand(1);
  CLI::App* validate_cmd = config_cmd->add_subcommand("validate", "validate a config; exit 2 on any error");
  add_config_args(validate_cmd);
  CLI::App* show_cmd = config_cmd->add_subcommand("show", "print the resolved config (defaults included)");
  add_config_args(show_cmd);
  CLI::App* version_cmd = app.add_subcommand("version", "print versions");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }
  try {
    if (*train_cmd) return train(config_path, sets, args);
    if (*validate_cmd) return config_command(false, config_path, sets);
    if (*show_cmd) return config_command(true, config_path, sets);
    if (*version_cmd) {
      std::printf("lmforge 0.1.0 (LibTorch %s)\n", TORCH_VERSION);
      return kExitOk;
    }
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "%s", e.what());  // already one "file:line:col: error: ..." line per problem
    return kExitBadInput;
  } catch (const InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitFailure;
  }
  return kExitFailure;
}
