// launch/eval_command.cpp -- `lmforge eval` (suites on a model, results, gates) and
// `lmforge report` (HTML pages of runs). Option parsing and output only.
#include "launch/eval_command.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/errors.h"
#include "core/log.h"
#include "core/run_dir.h"
#include "data/tokenizer.h"
#include "experiments/config.h"
#include "experiments/eval_suite.h"
#include "experiments/report.h"
#include "experiments/run_models.h"
#include "experiments/run_record.h"
#include "experiments/runs.h"
#include "parallel/comm.h"
#include "parallel/launcher.h"
#include "trainer/generate.h"
#include "trainer/peft/adapter_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lmforge::launch {

struct EvalCommands {
  CLI::App* eval = nullptr;
  CLI::App* report = nullptr;
  std::string model_dir, adapter_dir, compare_dir, suite_path, out;
  std::vector<std::string> gates;
  int64_t step = -1;
  std::vector<std::string> runs;
  std::string report_out, output_dir = "runs";
  bool png = false;
};

namespace {

// The run a model directory belongs to: the run directory itself, or the run its export/ sits in.
std::string run_of(const std::string& model_dir) {
  for (const fs::path& dir : {fs::path(model_dir), fs::path(model_dir) / ".."})
    if (fs::exists(RunDir{dir.string()}.meta()) && fs::exists(RunDir{dir.string()}.metrics())) return dir.lexically_normal().string();
  return "";
}

// The last training step a run logged; 0 when none.
int64_t last_step(const std::string& run_dir) {
  std::ifstream in(RunDir{run_dir}.metrics());
  int64_t step = 0;
  std::string line;
  while (std::getline(in, line)) {
    json row = json::parse(line, nullptr, false);
    if (!row.is_discarded() && row.contains("loss") && row["step"].is_number_integer()) step = row["step"];
  }
  return step;
}

void print_result(const json& result, const std::string& path) {
  std::printf("suite %s  step %lld  -> %s\n", result["suite"].get<std::string>().c_str(),
              static_cast<long long>(result["step"].get<int64_t>()), path.c_str());
  for (const auto& [task, r] : result["tasks"].items())
    for (const auto& [metric, value] : r["metrics"].items())
      std::printf("  %-24s %-14s %12.4f\n", task.c_str(), metric.c_str(), value.get<double>());
}

// Runs every suite on one model; on rank 0 returns the merged metrics row (empty elsewhere).
// model_dir, with the PEFT adapter in adapter_dir applied when given; results go to the adapter's
// run (or eval_results/<adapter>) then, not to the base's.
json evaluate_model(const std::string& model_dir, const std::string& adapter_dir, const EvalCommands& c,
                    const std::vector<experiments::EvalSuiteConfig>& suites, parallel::Comm& comm) {
  experiments::LoadedModel m = experiments::open_model_dir(model_dir);
  if (!adapter_dir.empty()) trainer::load_peft_adapter(*m.model, adapter_dir);
  const std::string evaluated = adapter_dir.empty() ? model_dir : adapter_dir;
  const std::string run_dir = run_of(evaluated);
  const std::string model_run = run_of(model_dir).empty() ? run_dir : run_of(model_dir);
  if (!m.tokenizer && !model_run.empty())  // a run's export of a byte-level model has no tokenizer files
    m.tokenizer = data::make_tokenizer(load_config(RunDir{model_run}.config()).tokenizer);
  if (!m.tokenizer) throw InputError(model_dir + ": no tokenizer lmforge can read in this directory; eval needs one");
  if (m.config.eos_token_ids.empty()) m.config.eos_token_ids = {m.tokenizer->eos_id()};
  experiments::EvalModel em{*m.model, *m.tokenizer, m.config.eos_token_ids, m.config.max_seq_len};
  fs::path model_path = fs::absolute(evaluated).lexically_normal();
  if (model_path.filename().empty()) model_path = model_path.parent_path();  // "dir/"
  const std::string out_dir = !c.out.empty() && model_dir == c.model_dir ? c.out
                              : !run_dir.empty() ? run_dir
                                                 : "eval_results/" + model_path.filename().string();
  const int64_t step = c.step >= 0 ? c.step : run_dir.empty() ? 0 : last_step(run_dir);
  json all_metrics = json::object();
  for (const auto& suite : suites) {
    json result = experiments::run_eval_suite(suite, em, comm, step);
    if (comm.rank() != 0) continue;
    result["model"] = model_dir;
    if (!adapter_dir.empty()) result["adapter"] = adapter_dir;
    std::optional<experiments::RunMetricsFile> run_metrics;
    if (!run_dir.empty() && fs::equivalent(out_dir, run_dir)) run_metrics.emplace(run_dir);
    experiments::RecordedEval recorded =
        experiments::record_eval_result(out_dir, result, run_metrics ? &*run_metrics : nullptr);
    print_result(result, recorded.path);
    all_metrics.update(recorded.row);
  }
  return all_metrics;
}

// The --compare table: the other model (A), this one (B) and the change B - A.
void print_comparison(const std::string& a_dir, const json& a, const std::string& b_dir, const json& b) {
  std::printf("\nA: %s\nB: %s\n  %-52s %12s %12s %12s\n", a_dir.c_str(), b_dir.c_str(), "metric", "A", "B", "change");
  for (const auto& [key, value] : b.items()) {
    if (!value.is_number_float()) continue;
    if (!a.contains(key)) {
      std::printf("  %-52s %12s %12.4f %12s\n", key.c_str(), "-", value.get<double>(), "-");
    } else {
      std::printf("  %-52s %12.4f %12.4f %+12.4f\n", key.c_str(), a[key].get<double>(), value.get<double>(),
                  value.get<double>() - a[key].get<double>());
    }
  }
}

int run_eval(const EvalCommands& c) {
  std::vector<experiments::EvalSuiteConfig> suites = experiments::load_eval_suites(c.suite_path);
  for (const auto& gate : c.gates) {  // checked before any model is loaded
    std::string metric = gate.substr(0, gate.find_first_of("<>"));
    experiments::check_gate(gate, {{metric, 0.0}});
    const auto& names = experiments::eval_metric_names();
    if (std::find(names.begin(), names.end(), metric.substr(metric.rfind('/') + 1)) == names.end()) {
      std::string available;
      for (const auto& n : names) available += (available.empty() ? "" : ", ") + n;
      throw InputError("--gate '" + gate + "': '" + metric + "' is no eval metric; available: " + available);
    }
  }
  parallel::LaunchEnv env = parallel::detect_launch_env();
  std::unique_ptr<parallel::Comm> comm = env.world_size > 1 ? parallel::make_mpi_world_comm() : parallel::make_self_comm();
  parallel::configure_threads(parallel::ParallelConfig{}, env, /*bf16_matmuls=*/false);
  json all_metrics = evaluate_model(c.model_dir, c.adapter_dir, c, suites, *comm);
  if (!c.compare_dir.empty()) {
    json other = evaluate_model(c.compare_dir, "", c, suites, *comm);
    if (comm->rank() == 0) print_comparison(c.compare_dir, other, c.model_dir, all_metrics);
  }
  if (comm->rank() != 0) return 0;
  int code = 0;
  for (const auto& gate : c.gates) {
    std::string missed = experiments::check_gate(gate, all_metrics);
    std::printf("gate %s: %s\n", gate.c_str(), missed.empty() ? "passed" : ("MISSED (" + missed + ")").c_str());
    if (!missed.empty()) code = 1;
  }
  return code;
}

}  // namespace

std::shared_ptr<EvalCommands> add_eval_commands(CLI::App& app) {
  auto c = std::make_shared<EvalCommands>();
  c->eval = app.add_subcommand("eval", "run evaluation suites on a model; write eval/<suite>/<step>.json");
  c->eval->add_option("suite", c->suite_path, "suite YAML (`suites:`, or a config with `eval.suites:`)")->required();
  c->eval->add_option("--model", c->model_dir, "HF model directory or lmforge run directory")->required();
  c->eval->add_option("--adapter", c->adapter_dir, "PEFT adapter directory applied to --model (not to --compare)");
  c->eval->add_option("--compare", c->compare_dir, "also evaluate this model (e.g. the base) and print both with the change");
  c->eval->add_option("--gate", c->gates, "METRIC>=VALUE (or <=, >, <): exit 1 when missed (repeatable)");
  c->eval->add_option("--out", c->out, "where eval/<suite>/<step>.json go (default: the model's run, else eval_results/<model dir name>)");
  c->eval->add_option("--step", c->step, "step recorded with the results (default: the run's last step, else 0)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 62));

  c->report = app.add_subcommand("report", "write a self-contained HTML report of one or more runs");
  c->report->add_option("runs", c->runs, "run directories or run ids (overlaid)")->required();
  c->report->add_option("--out", c->report_out, "the HTML file to write")->required();
  c->report->add_flag("--png", c->png, "also write one PNG per curve next to the HTML file");
  c->report->add_option("--output-dir", c->output_dir, "root of run directories, for run ids (default runs)");
  return c;
}

int run_eval_command(const EvalCommands& c) {
  if (*c.eval) return run_eval(c);
  if (*c.report) {
    std::vector<std::string> dirs;
    for (const auto& run : c.runs) dirs.push_back(experiments::resolve_run(run, c.output_dir));
    for (const auto& file : experiments::write_report(dirs, c.report_out, c.png)) std::printf("%s\n", file.c_str());
    return 0;
  }
  return -1;
}

}  // namespace lmforge::launch
