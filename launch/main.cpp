// launch/main.cpp -- the lmforge CLI: sub-commands, exit codes, and the train flow's wiring.
// The only main(). Work is done by the library; this file only orders it.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>

#include "data/hf_tokenizer.h"
#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "experiments/run_record.h"
#include "launch/hf_commands.h"
#include "parallel/comm.h"
#include "parallel/launcher.h"
#include "trainer/config.h"
#include "trainer/config_reader.h"
#include "trainer/digest.h"
#include "trainer/errors.h"
#include "trainer/hf_model.h"
#include "trainer/trainer.h"

namespace {

using namespace lmforge;

constexpr int kExitOk = 0, kExitFailure = 1, kExitBadInput = 2;

void check_corpus_length(const data::TokenCorpus& corpus, int64_t seq_len, const std::string& key) {
  if (corpus.tokens.numel() <= seq_len)
    throw InputError(key + ": the inputs hold " + std::to_string(corpus.tokens.numel()) +
                     " tokens, fewer than train.seq_len + 1 = " + std::to_string(seq_len + 1));
}

// Loads the config on every rank and refuses to start, on every rank, if any rank resolved a
// different one (different --set values, files or versions on different nodes).
Config load_config_on_every_rank(parallel::Comm& comm, const std::string& path, const std::vector<std::string>& sets) {
  Config cfg = load_config(path, sets);
  if (comm.size() == 1) return cfg;
  std::string hash = sha256_hex(cfg.resolved_yaml);
  auto mine = torch::from_blob(hash.data(), {64}, torch::kByte).clone();
  auto all = comm.allgather(mine).view({comm.size(), 64});
  std::string root_yaml = parallel::broadcast_string(comm, cfg.resolved_yaml, 0);
  for (int r = 1; r < comm.size(); ++r) {
    if (torch::equal(all[r], all[0])) continue;
    std::string message = "rank " + std::to_string(r) + " resolved a different config than rank 0; refusing to train.";
    if (comm.rank() == r) {
      for (const auto& d : config_differences(root_yaml, cfg.resolved_yaml)) message += "\n  " + d + " (rank 0 vs this rank)";
    }
    throw InputError(message);
  }
  return cfg;
}

std::vector<std::string> gather_hosts(parallel::Comm& comm) {
  char host[64] = {0};
  gethostname(host, sizeof host - 1);
  auto all = comm.allgather(torch::from_blob(host, {64}, torch::kByte).clone()).view({comm.size(), 64});
  std::vector<std::string> hosts;
  for (int r = 0; r < comm.size(); ++r) hosts.emplace_back(reinterpret_cast<const char*>(all[r].contiguous().data_ptr()));
  return hosts;
}

int train_loop(const Config& cfg, trainer::CausalLM model, const data::TokenCorpus& train_corpus,
               const data::TokenCorpus& eval_corpus, experiments::RunRecord* record, parallel::Comm& comm) {
  trainer::TrainerSettings settings{cfg.train, cfg.optim, cfg.schedule, cfg.eval, cfg.checkpoint, false,
                                    cfg.parallel.bucket_mb};
  settings.live_progress = cfg.logging.progress == "always" || (cfg.logging.progress == "auto" && isatty(2));
  data::WindowSampler sampler(train_corpus.tokens, cfg.train.seq_len, static_cast<uint64_t>(cfg.run.seed));
  trainer::Trainer trainer(std::move(model), settings, std::move(sampler), eval_corpus.tokens, record, comm);
  trainer.run();
  return kExitOk;
}

int train(const std::string& config_path, const std::vector<std::string>& sets,
          const std::vector<std::string>& argv) {
  parallel::LaunchEnv env = parallel::detect_launch_env();
  std::unique_ptr<parallel::Comm> comm = env.world_size > 1 ? parallel::make_mpi_world_comm() : parallel::make_self_comm();
  Config cfg = load_config_on_every_rank(*comm, config_path, sets);
  if (cfg.parallel.dp != 0 && cfg.parallel.dp != comm->size())
    throw InputError("parallel.dp is " + std::to_string(cfg.parallel.dp) + " but " + std::to_string(comm->size()) +
                     " ranks were started (" + env.launcher + "); set parallel.dp: auto or start that many");
  int threads = parallel::configure_threads(cfg.parallel, env, cfg.train.precision == "bf16");

  // An HF directory's own tokenizer wins over tokenizer.kind: its ids are the ones the weights know.
  std::unique_ptr<data::Tokenizer> tokenizer = cfg.model.from.empty() ? nullptr : data::load_hf_tokenizer(cfg.model.from);
  if (!tokenizer) tokenizer = data::make_tokenizer(cfg.tokenizer);
  data::TokenCorpus train_corpus = data::open_text_corpus(cfg.data.train, *tokenizer, cfg.data.cache_dir, "data.train");
  check_corpus_length(train_corpus, cfg.train.seq_len, "data.train");
  data::TokenCorpus eval_corpus;
  if (!cfg.data.eval.empty()) {
    eval_corpus = data::open_text_corpus(cfg.data.eval, *tokenizer, cfg.data.cache_dir, "data.eval");
    check_corpus_length(eval_corpus, cfg.train.seq_len, "data.eval");
  }

  const bool is_root = comm->rank() == 0;
  std::optional<experiments::RunRecord> record;
  if (is_root) record.emplace(experiments::RunRecord::create(cfg.run, cfg.resolved_yaml, argv));
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  trainer::CausalLM model = trainer::build_model(cfg.model);
  std::vector<std::string> hosts = gather_hosts(*comm);  // collective: every rank calls it
  if (!is_root) return train_loop(cfg, model, train_corpus, eval_corpus, nullptr, *comm);
  record->set_meta("world", {{"launcher", env.launcher}, {"world_size", comm->size()}, {"dp", comm->size()},
                             {"backend", comm->backend()}, {"hosts", hosts}, {"threads", threads}});
  record->set_meta("datasets", {{"train", {{"id", train_corpus.id}, {"tokens", train_corpus.tokens.numel()},
                                          {"documents", train_corpus.num_documents}}},
                               {"eval", eval_corpus.id.empty() ? nlohmann::json(nullptr)
                                                               : nlohmann::json{{"id", eval_corpus.id},
                                                                                {"tokens", eval_corpus.tokens.numel()}}}});
  record->set_meta("model", {{"arch", cfg.model.arch}, {"parameters", model->num_parameters()}});
  std::fprintf(stderr, "run %s: %s model, %lld parameters, %lld train tokens, %d ranks x %d threads\n",
               record->dir().c_str(), cfg.model.arch.c_str(), static_cast<long long>(model->num_parameters()),
               static_cast<long long>(train_corpus.tokens.numel()), comm->size(), threads);
  try {
    train_loop(cfg, model, train_corpus, eval_corpus, &*record, *comm);
    trainer::save_run_export(*model, cfg.model, record->dir());
  } catch (const std::exception& e) {
    record->finish("failed", e.what());
    throw;
  }
  record->finish("completed");
  std::printf("%s\n", record->dir().c_str());
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
  auto hf_commands = launch::add_hf_commands(app);

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
    if (int code = launch::run_hf_command(*hf_commands); code >= 0) return code;
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
