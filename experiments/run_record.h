// experiments/run_record.h -- the run directory: resolved config, meta.json, metrics.jsonl.
// What a run records so it can be reproduced and compared; checkpoints live in trainer/.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/run_dir.h"
#include "trainer/metrics_sink.h"

namespace lmforge::config {
class Section;
}

namespace lmforge::experiments {

class TensorBoardWriter;

struct RunConfig {
  std::string name;                 // required: groups runs under <output_dir>/<name>/
  int64_t seed = 1234;              // global seed: weights, data order
  std::string output_dir = "runs";  // root of run directories, relative to the working dir
};
void read_run_config(config::Section& s, RunConfig& c);

enum class Progress { on_terminal, always, never };  // logging.progress: auto | always | never

struct LoggingConfig {
  Progress progress = Progress::on_terminal;  // auto: a live line on a terminal, a line per log_every otherwise
  bool tensorboard = false;       // also write every metrics row to <run>/tensorboard/ event files
};
void read_logging_config(config::Section& s, LoggingConfig& c);

class RunRecord : public trainer::MetricsSink {
 public:
  // Creates <output_dir>/<name>/<run_id>/ with config.yaml and meta.json (status: running).
  static RunRecord create(const RunConfig& run, const std::string& resolved_yaml,
                          const std::vector<std::string>& argv);

  // Continues the run in `dir` (checkpoint.resume: auto): same run id, status running again, a
  // `resumed` entry in meta.json, metric rows after `from_step` dropped (they are redone).
  static RunRecord reopen(const std::string& dir, int64_t from_step, const std::vector<std::string>& argv);

  const std::string& dir() const { return dir_; }
  RunDir files() const { return RunDir{dir_}; }
  const std::string& run_id() const { return run_id_; }
  void set_meta(const std::string& key, const nlohmann::json& value);  // rewrites meta.json
  void append_metrics(const nlohmann::json& row) override;             // one line, flushed
  // From now on every metrics row also goes to <run>/tensorboard/ as scalar summaries.
  void enable_tensorboard();
  void finish(const std::string& status, const std::string& error = "");

 private:
  RunRecord() = default;
  void write_meta();
  void lock();  // held while the run is alive, so `resume: auto` never continues a live run
  std::string dir_, run_id_;
  std::shared_ptr<int> lock_fd_;  // closed (and the lock released) with the last copy
  std::string meta_text_;  // meta.json as last written (kept as text to keep json out of here)
  std::ofstream metrics_;
  std::shared_ptr<TensorBoardWriter> tensorboard_;  // null unless logging.tensorboard
};

// Appends metric rows to the metrics.jsonl of an existing run that no RunRecord holds open (an
// evaluation of a finished run).
class RunMetricsFile : public trainer::MetricsSink {
 public:
  explicit RunMetricsFile(const std::string& run_dir) : path_(RunDir{run_dir}.metrics()) {}
  void append_metrics(const nlohmann::json& row) override;

 private:
  std::string path_;
};

// The newest run under <output_dir>/<name>/ that did not finish (status running or interrupted)
// and that no live process holds; "" when there is none.
std::string find_unfinished_run(const std::string& output_dir, const std::string& name);

// The source commit lmforge was built from, with "+dirty" when the tree had changes; "unknown"
// outside a git checkout.
std::string code_version_text();


}  // namespace lmforge::experiments
