// experiments/eval_suite.h -- evaluation suites: tasks read from the `eval:` section (or a suite
// file), run on a model across data-parallel ranks, scored, and written as eval/<suite>/<step>.json.
// The metric formulas are eval_metrics.h's; the CLI wiring is launch/eval_command.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiments/eval_metrics.h"
#include "trainer/generate.h"
#include "trainer/metrics_sink.h"

namespace lmforge::config {
class Section;
}
namespace lmforge::data {
class Tokenizer;
}
namespace lmforge::parallel {
class Comm;
}

namespace lmforge::experiments {

struct EvalTaskConfig {
  std::string name;
  std::string data;              // JSONL records (.jsonl), or plain text for perplexity; relative paths
                                 // are resolved against the file that names them
  std::string kind = "auto";     // generate | choice | perplexity; auto: .txt -> perplexity,
                                 // records with "choices" -> choice, else generate
  std::string template_name;     // shown in results; the template's version is its content hash
  std::string prompt = "{prompt}";        // rendered from each record: what the model is given
  std::string reference = "{reference}";  // rendered from each record: the expected output
  std::vector<std::string> metrics;       // required; see eval_metric_names()
  NormalizeOptions normalize;             // exact_match and f1
  trainer::SamplingConfig sampling;       // generate tasks (greedy by default)
  std::vector<std::string> stop = {"\n"};  // predictions end before any of these: one-line answers
  int64_t max_examples = 0;               // 0: every record
  int64_t window = 256;                   // perplexity: tokens per scored window
  std::string where;                      // file:line:col of the task, for messages
};

struct EvalSuiteConfig {
  std::string name;
  std::vector<EvalTaskConfig> tasks;
};

// The metric names each task kind accepts (unknown ones are refused with this list).
const std::vector<std::string>& eval_metric_names();

// `suites:` of an eval section: {suite name: {tasks: {task name: {data, metrics, ...}}}}.
void read_eval_suites(config::Section& eval_section, std::vector<EvalSuiteConfig>& suites);

// Reads a suite file for `lmforge eval`: its top level is either an eval section (`suites:`) or a
// whole lmforge config with one. Throws config::ConfigError listing every problem.
std::vector<EvalSuiteConfig> load_eval_suites(const std::string& path);

struct EvalModel {
  trainer::CausalLMImpl& model;
  const data::Tokenizer& tokenizer;
  std::vector<int64_t> stop_ids;  // generation ends at these (the model's eos)
  int64_t max_positions = 0;      // the model's context; 0: unlimited
};

// Collective over `comm`: rank r takes examples r, r + size, ...; rank 0 gathers them in order
// and scores them, so any number of ranks gives the same numbers. Returns the full result
// (metrics, every prediction next to its reference, dataset SHA-256, template version) on rank 0
// and {"metrics": ...} on the others. Bad data throws InputError naming file and line.
nlohmann::json run_eval_suite(const EvalSuiteConfig& suite, EvalModel& m, parallel::Comm& comm, int64_t step);

// The flat metrics row of a suite result: {"step", "suite", "eval/<suite>/<task>/<metric>": v}.
nlohmann::json eval_metrics_row(const nlohmann::json& result);

// Writes <dir>/eval/<suite>/<step>.json atomically and returns its path.
std::string write_eval_result(const std::string& dir, const nlohmann::json& result);

// One suite result recorded: its file under `dir` (write_eval_result) and its metrics row, which
// also goes to `run_metrics` (the run's metrics.jsonl) when given. The one place both happen.
struct RecordedEval {
  std::string path;
  nlohmann::json row;
};
RecordedEval record_eval_result(const std::string& dir, const nlohmann::json& result, trainer::MetricsSink* run_metrics);

// A gate "metric>=value" (also <=, >, <) checked against a metrics row; the metric may be the
// full "eval/<suite>/<task>/<metric>" key or any unambiguous suffix of it, such as "exact_match".
// Returns "" when met, else the reason. Throws InputError on a malformed gate or unknown metric.
std::string check_gate(const std::string& gate, const nlohmann::json& row);

}  // namespace lmforge::experiments
