// experiments/runs.h -- the run registry read back from run directories: list, show, diff.
// Reads only what runs wrote (meta.json, config.yaml, metrics.jsonl, checkpoints); writes nothing.
#pragma once

#include <map>
#include <string>

namespace lmforge::experiments {

// A table of every run under `output_dir` (run id, name, status, steps, final loss and eval loss,
// train dataset id, start time), newest first.
std::string list_runs(const std::string& output_dir);

// `run` is a run directory, or a run id looked up under `output_dir`. Throws InputError if neither.
std::string resolve_run(const std::string& run, const std::string& output_dir);

// meta.json's essentials, the final metrics and the committed checkpoints of one run.
std::string show_run(const std::string& run_dir);

// The README.md model card of an export of `run_dir`: what it is, its lineage (base model,
// adapter, dataset ids, code version, config hash, world), the last evaluation and the resolved
// config. Written into `export_dir`, replacing any card there.
void write_model_card(const std::string& run_dir, const std::string& export_dir);

// Config differences key by key, dataset ids, code versions, final metrics and the last eval
// results (held-out loss and every eval suite metric) side by side with the change B - A.
std::string diff_runs(const std::string& run_a, const std::string& run_b);

// The last value of every evaluation metric in a run's metrics.jsonl: eval_loss, eval_ppl and
// the eval suites' "eval/<suite>/<task>/<metric>" keys.
std::map<std::string, double> last_eval_metrics(const std::string& run_dir);

}  // namespace lmforge::experiments
