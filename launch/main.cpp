// launch/main.cpp -- the lmforge CLI: sub-commands and exit codes. The only main(). Work is done by
// the library (the train flow is experiments/train_job.h's); this file parses and dispatches.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/config_reader.h"
#include "core/errors.h"
#include "core/log.h"
#include "data/pipeline.h"
#include "data/tokenizer.h"
#include "experiments/config.h"
#include "experiments/runs.h"
#include "experiments/train_job.h"
#include "launch/data_commands.h"
#include "launch/eval_command.h"
#include "launch/hf_commands.h"

namespace {

using namespace lmforge;

constexpr int kExitOk = 0, kExitFailure = 1, kExitBadInput = 2, kExitPreempted = 3;

int config_command(bool show, const std::string& path, const std::vector<std::string>& sets) {
  Config cfg = load_config(path, sets);
  if (show) {
    std::cout << cfg.resolved_yaml;
  } else {
    std::cout << path << ": ok\n";
  }
  return kExitOk;
}

int data_prepare_command(const std::string& path, const std::vector<std::string>& sets) {
  Config cfg = load_config(path, sets);
  auto tokenizer = make_config_tokenizer(cfg);
  auto prepared = data::prepare_dataset(cfg.data, *tokenizer, {cfg.train.seq_len, static_cast<uint64_t>(cfg.run.seed)});
  const data::DatasetManifest m = prepared.summary();
  nlohmann::json summary = {{"dataset_id", prepared.id}, {"dir", prepared.dir}, {"reused", prepared.reused},
                            {"train_rows", m.train.rows}, {"eval_rows", m.eval.rows}, {"stats", m.stats}};
  std::cout << summary.dump(2) << "\n";
  return kExitOk;
}

// One record as the model will see it: each segment with whether it is trained on, then its tokens.
// With `json`: one object {record, where, segments: [{text, trained}], tokens: [[id, loss], ...]}.
int data_inspect_command(const std::string& path, const std::vector<std::string>& sets, int64_t index, bool json) {
  Config cfg = load_config(path, sets);
  auto tokenizer = make_config_tokenizer(cfg);
  auto records = data::read_records(cfg.data, index + 1, tokenizer.get());
  if (index >= static_cast<int64_t>(records.size()))
    throw InputError("data inspect: --record " + std::to_string(index) + " but the sources hold " +
                     std::to_string(records.size()) + " records");
  const auto& r = records[index];
  auto ids_of = [&](const data::Segment& seg) { return r.rendered ? tokenizer->encode_rendered(seg.text) : tokenizer->encode(seg.text); };
  if (json) {
    nlohmann::json out = {{"record", index}, {"where", r.where}, {"segments", nlohmann::json::array()},
                          {"tokens", nlohmann::json::array()}};
    for (const auto& seg : r.segments) {
      out["segments"].push_back({{"text", seg.text}, {"trained", seg.trained}});
      for (int32_t id : ids_of(seg)) out["tokens"].push_back({id, seg.trained ? 1 : 0});
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return kExitOk;
  }
  std::cout << "record " << index << " (" << r.where << ")\n";
  for (const auto& seg : r.segments) {
    std::cout << (seg.trained ? "--- trained ---\n" : "--- no loss (prompt) ---\n") << seg.text << "\n";
  }
  std::cout << "--- tokens: id, loss, text ---\n";
  for (const auto& seg : r.segments) {
    for (int32_t id : ids_of(seg)) {
      nlohmann::json piece = tokenizer->decode({id});
      std::cout << id << "\t" << (seg.trained ? "1" : "0") << "\t" << piece.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
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
  CLI::App* data_cmd = app.add_subcommand("data", "the data pipeline: prepare shards, inspect records");
  data_cmd->require_subcommand(1);
  CLI::App* prepare_cmd = data_cmd->add_subcommand("prepare", "tokenize the config's sources into HDF5 shards + manifest");
  add_config_args(prepare_cmd);
  CLI::App* inspect_cmd = data_cmd->add_subcommand("inspect", "show one record with its loss mask");
  add_config_args(inspect_cmd);
  int64_t record_index = 0;
  inspect_cmd->add_option("--record", record_index, "record number, from 0 (default 0)")->check(CLI::NonNegativeNumber);
  bool inspect_json = false;
  inspect_cmd->add_flag("--json", inspect_json, "print {record, where, segments: [{text, trained}], tokens: [[id, loss]]}");
  CLI::App* version_cmd = app.add_subcommand("version", "print versions");
  CLI::App* runs_cmd = app.add_subcommand("runs", "the run registry: list, show, diff");
  runs_cmd->require_subcommand(1);
  std::string output_dir = "runs", run_a, run_b;
  CLI::App* runs_list = runs_cmd->add_subcommand("list", "every run: id, name, status, steps, final losses");
  CLI::App* runs_show = runs_cmd->add_subcommand("show", "one run: meta, final metrics, checkpoints");
  runs_show->add_option("run", run_a, "run directory or run id")->required();
  CLI::App* runs_diff = runs_cmd->add_subcommand("diff", "two runs side by side: config, data, code, metrics");
  runs_diff->add_option("run_a", run_a, "run directory or run id")->required();
  runs_diff->add_option("run_b", run_b, "run directory or run id")->required();
  for (CLI::App* sub : {runs_list, runs_show, runs_diff})
    sub->add_option("--output-dir", output_dir, "root of run directories (run.output_dir; default runs)");
  auto hf_commands = launch::add_hf_commands(app);
  auto data_commands = launch::add_data_commands(app);
  auto eval_commands = launch::add_eval_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }
  try {
    if (*train_cmd) {
      std::string run_dir = experiments::run_train_job(config_path, sets, args);
      if (!run_dir.empty()) std::printf("%s\n", run_dir.c_str());
      return kExitOk;
    }
    if (*validate_cmd) return config_command(false, config_path, sets);
    if (*show_cmd) return config_command(true, config_path, sets);
    if (*prepare_cmd) return data_prepare_command(config_path, sets);
    if (*inspect_cmd) return data_inspect_command(config_path, sets, record_index, inspect_json);
    if (*runs_list) std::cout << experiments::list_runs(output_dir);
    if (*runs_show) std::cout << experiments::show_run(experiments::resolve_run(run_a, output_dir));
    if (*runs_diff)
      std::cout << experiments::diff_runs(experiments::resolve_run(run_a, output_dir),
                                          experiments::resolve_run(run_b, output_dir));
    if (*runs_cmd) return kExitOk;
    if (int code = launch::run_hf_command(*hf_commands); code >= 0) return code;
    if (int code = launch::run_data_command(*data_commands); code >= 0) return code;
    if (int code = launch::run_eval_command(*eval_commands); code >= 0) return code;
    if (*version_cmd) {
      std::printf("lmforge 0.1.0 (LibTorch %s)\n", TORCH_VERSION);
      return kExitOk;
    }
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "%s", e.what());  // already one "file:line:col: error: ..." line per problem
    return kExitBadInput;
  } catch (const InputError& e) {
    log::line(std::string("error: ") + e.what());
    return kExitBadInput;
  } catch (const Preempted& e) {
    log::line(std::string("interrupted: ") + e.what() + " (exit 3: requeue to resume)");
    return kExitPreempted;
  } catch (const std::exception& e) {
    log::line(std::string("error: ") + e.what());
    return kExitFailure;
  }
  return kExitFailure;
}
