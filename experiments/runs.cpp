// experiments/runs.cpp -- reading run directories back into tables for `lmforge runs`.
// Formatting only; what a run records is run_record.cpp's business.
#include "experiments/runs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/files.h"
#include "core/run_dir.h"
#include "experiments/config.h"
#include "core/errors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lmforge::experiments {

namespace {

json read_meta(const std::string& dir) {
  json meta = json::parse(read_file_or_empty(RunDir{dir}.meta()), nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) throw InputError(dir + "/meta.json is missing or not JSON");
  return meta;
}

// The last training row and the last eval row of metrics.jsonl.
struct FinalMetrics {
  json train = json::object(), eval = json::object();
};

FinalMetrics final_metrics(const std::string& dir) {
  FinalMetrics f;
  std::ifstream in(RunDir{dir}.metrics());
  std::string line;
  while (std::getline(in, line)) {
    json row = json::parse(line, nullptr, false);
    if (row.is_discarded() || row.contains("suite")) continue;  // eval suite rows: last_eval_metrics
    (row.contains("eval_loss") ? f.eval : f.train) = row;
  }
  return f;
}

std::string number(const json& row, const char* key, const char* format = "%.4f") {
  if (!row.contains(key) || !row[key].is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, format, row[key].get<double>());
  return buf;
}

std::string text(const json& j) { return j.is_string() ? j.get<std::string>() : (j.is_null() ? "-" : j.dump()); }

std::string dataset_id(const json& meta, const char* split) {
  if (!meta.contains("datasets") || !meta["datasets"].contains(split) || meta["datasets"][split].is_null()) return "-";
  return text(meta["datasets"][split].value("id", json()));
}

std::string code_of(const json& meta) {
  if (!meta.contains("code") || meta["code"]["git_commit"].is_null()) return "unknown";
  return meta["code"]["git_commit"].get<std::string>().substr(0, 12) +
         (meta["code"].value("git_dirty", false) ? "+dirty" : "");
}

std::vector<std::string> run_dirs(const std::string& output_dir) {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& name : fs::directory_iterator(output_dir, ec))
    for (const auto& run : fs::directory_iterator(name.path(), ec))
      if (fs::exists(RunDir{run.path().string()}.meta())) dirs.push_back(run.path().string());
  std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) {
    return fs::path(a).filename() > fs::path(b).filename();  // run ids start with their UTC start time
  });
  return dirs;
}

}  // namespace

std::string list_runs(const std::string& output_dir) {
  std::ostringstream out;
  char line[512];
  std::snprintf(line, sizeof line, "%-24s %-16s %-12s %7s %9s %9s %-14s %s\n", "RUN ID", "NAME", "STATUS", "STEPS",
                "LOSS", "EVAL", "DATASET", "STARTED");
  out << line;
  for (const auto& dir : run_dirs(output_dir)) {
    json meta = json::parse(read_file_or_empty(RunDir{dir}.meta()), nullptr, false);
    if (meta.is_discarded()) continue;
    FinalMetrics f = final_metrics(dir);
    std::snprintf(line, sizeof line, "%-24s %-16s %-12s %7s %9s %9s %-14s %s\n", text(meta["run_id"]).c_str(),
                  text(meta["name"]).c_str(), text(meta["status"]).c_str(), number(f.train, "step", "%.0f").c_str(),
                  number(f.train, "loss").c_str(), number(f.eval, "eval_loss").c_str(),
                  dataset_id(meta, "train").substr(0, 12).c_str(), text(meta["start_time"]).c_str());
    out << line;
  }
  return out.str();
}

std::string resolve_run(const std::string& run, const std::string& output_dir) {
  if (fs::exists(RunDir{run}.meta())) return run;
  for (const auto& dir : run_dirs(output_dir))
    if (fs::path(dir).filename() == run) return dir;
  throw InputError("run '" + run + "': not a run directory, and no run with that id under '" + output_dir + "'");
}

std::string show_run(const std::string& run_dir) {
  json meta = read_meta(run_dir);
  FinalMetrics f = final_metrics(run_dir);
  std::ostringstream out;
  out << "run        " << text(meta["run_id"]) << "  (" << run_dir << ")\n"
      << "name       " << text(meta["name"]) << "\n"
      << "status     " << text(meta["status"]) << (meta.contains("error") ? "  " + text(meta["error"]) : "") << "\n"
      << "started    " << text(meta["start_time"]) << "   ended " << text(meta["end_time"]) << "\n"
      << "code       " << code_of(meta) << "\n"
      << "config     sha256 " << text(meta["config_sha256"]) << "\n"
      << "datasets   train " << dataset_id(meta, "train") << "   eval " << dataset_id(meta, "eval") << "\n";
  if (meta.contains("world"))
    out << "world      " << meta["world"].value("world_size", 1) << " ranks, " << text(meta["world"]["backend"]) << ", "
        << text(meta["world"]["launcher"]) << "\n";
  if (meta.contains("resumed")) out << "resumed    " << meta["resumed"].size() << " time(s)\n";
  out << "final      step " << number(f.train, "step", "%.0f") << "  loss " << number(f.train, "loss")
      << "  eval_loss " << number(f.eval, "eval_loss") << "  eval_ppl " << number(f.eval, "eval_ppl", "%.2f") << "\n";
  std::vector<std::string> checkpoints;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(RunDir{run_dir}.checkpoints(), ec))
    if (e.is_directory()) checkpoints.push_back(e.path().filename().string());
  std::sort(checkpoints.begin(), checkpoints.end());
  out << "checkpoints";
  for (const auto& c : checkpoints) out << " " << c;
  out << "\n";
  return out.str();
}

void write_model_card(const std::string& run_dir, const std::string& export_dir) {
  json meta = read_meta(run_dir);
  FinalMetrics f = final_metrics(run_dir);
  std::string config = read_file_or_empty(RunDir{run_dir}.config());
  json model = meta.value("model", json::object());
  std::string base = "a random initialisation (seed " + text(meta["seed"]) + ")";
  if (config.find("\n  from: ") != std::string::npos) {
    size_t at = config.find("\n  from: ") + 9;
    std::string from = config.substr(at, config.find('\n', at) - at);
    if (!from.empty() && from != "\"\"" && from != "''") base = "`" + from + "`";
  }
  auto dataset_line = [&](const char* split) {
    if (!meta.contains("datasets") || meta["datasets"][split].is_null()) return std::string("none");
    const json& d = meta["datasets"][split];
    return "`" + text(d.value("id", json())) + "` (" + split + " split, " + text(d.value("tokens", json())) +
           " tokens; the id hashes the input files, tokenizer, templates and data pipeline config)";
  };
  std::ostringstream card;
  card << "# " << text(meta["name"]) << " (" << text(meta["run_id"]) << ")\n\n"
       << "A " << text(model.value("arch", json())) << " causal language model with "
       << text(model.value("parameters", json())) << " parameters, trained by lmforge. Load it with\n"
       << "`AutoModelForCausalLM.from_pretrained(\"<this directory>\")`.\n\n"
       << "## Lineage\n\n"
       << "- base model: " << base << "\n"
       << "- adapter: none (all weights trained)\n"
       << "- training data: " << dataset_line("train") << "\n"
       << "- evaluation data: " << dataset_line("eval") << "\n"
       << "- code: lmforge at " << code_of(meta) << "\n"
       << "- config: sha256 `" << text(meta["config_sha256"]) << "` (in full below)\n"
       << "- run: `" << run_dir << "`, status " << text(meta["status"]) << ", " << number(f.train, "step", "%.0f")
       << " steps, " << (meta.contains("world") ? text(meta["world"].value("world_size", json())) : "1")
       << " rank(s), started " << text(meta["start_time"]) << ", ended " << text(meta["end_time"])
       << (meta.contains("resumed") ? ", resumed " + std::to_string(meta["resumed"].size()) + " time(s)" : "")
       << "\n\n## Evaluation\n\n"
       << "| step | train loss | eval loss | eval perplexity |\n|---|---|---|---|\n"
       << "| " << number(f.train, "step", "%.0f") << " | " << number(f.train, "loss") << " | "
       << number(f.eval, "eval_loss") << " | " << number(f.eval, "eval_ppl", "%.2f") << " |\n\n";
  bool suites = false;
  for (const auto& [key, value] : last_eval_metrics(run_dir)) {
    if (key.rfind("eval/", 0) != 0) continue;
    if (!suites) card << "| eval suite / task / metric | value |\n|---|---|\n";
    suites = true;
    char cell[32];
    std::snprintf(cell, sizeof cell, "%.4f", value);
    card << "| " << key.substr(5) << " | " << cell << " |\n";
  }
  card << (suites ? "\n" : "") << "## Config\n\n```yaml\n" << config << "```\n";
  fs::create_directories(export_dir);
  std::ofstream out(fs::path(export_dir) / "README.md", std::ios::trunc);
  out << card.str();
  if (!out.flush()) throw InputError("cannot write " + export_dir + "/README.md");
}

std::string diff_runs(const std::string& run_a, const std::string& run_b) {
  json a = read_meta(run_a), b = read_meta(run_b);
  std::ostringstream out;
  out << "A: " << run_a << "\nB: " << run_b << "\n\nconfig (A vs B):\n";
  auto differences = config_differences(read_file_or_empty(RunDir{run_a}.config()), read_file_or_empty(RunDir{run_b}.config()));
  if (differences.empty()) out << "  (identical)\n";
  for (const auto& d : differences) out << "  " << d << "\n";
  auto row = [&](const std::string& what, const std::string& va, const std::string& vb, bool mark = true) {
    char line[512];
    std::snprintf(line, sizeof line, "  %-14s %-24s %-24s%s\n", what.c_str(), va.c_str(), vb.c_str(),
                  mark && va != vb ? "  *" : "");
    out << line;
  };
  out << "\n";
  row("", "A", "B", false);
  row("train dataset", dataset_id(a, "train").substr(0, 16), dataset_id(b, "train").substr(0, 16));
  row("eval dataset", dataset_id(a, "eval").substr(0, 16), dataset_id(b, "eval").substr(0, 16));
  row("code", code_of(a), code_of(b));
  row("status", text(a["status"]), text(b["status"]));
  FinalMetrics fa = final_metrics(run_a), fb = final_metrics(run_b);
  row("steps", number(fa.train, "step", "%.0f"), number(fb.train, "step", "%.0f"));
  row("final loss", number(fa.train, "loss"), number(fb.train, "loss"));
  row("eval loss", number(fa.eval, "eval_loss"), number(fb.eval, "eval_loss"));
  row("eval ppl", number(fa.eval, "eval_ppl", "%.2f"), number(fb.eval, "eval_ppl", "%.2f"));
  std::map<std::string, double> ea = last_eval_metrics(run_a), eb = last_eval_metrics(run_b);
  for (const auto& [key, value] : eb) ea.emplace(key, std::nan(""));
  if (ea.empty()) return out.str();
  out << "\neval (last results):\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-52s %12s %12s %12s\n", "metric", "A", "B", "change");
  out << line;
  for (const auto& [key, a_value] : ea) {
    double b_value = eb.count(key) ? eb[key] : std::nan("");
    auto cell = [](double v, const char* format) {
      char buf[32];
      std::snprintf(buf, sizeof buf, format, v);
      return std::isnan(v) ? std::string("-") : std::string(buf);
    };
    std::snprintf(line, sizeof line, "  %-52s %12s %12s %12s\n", key.c_str(), cell(a_value, "%.4f").c_str(),
                  cell(b_value, "%.4f").c_str(), cell(b_value - a_value, "%+.4f").c_str());
    out << line;
  }
  return out.str();
}

std::map<std::string, double> last_eval_metrics(const std::string& run_dir) {
  std::map<std::string, double> out;
  std::ifstream in(RunDir{run_dir}.metrics());
  std::string line;
  while (std::getline(in, line)) {
    json row = json::parse(line, nullptr, false);
    if (row.is_discarded() || !row.is_object()) continue;
    for (const auto& [key, value] : row.items())
      if (value.is_number() && (key == "eval_loss" || key == "eval_ppl" || key.rfind("eval/", 0) == 0))
        out[key] = value.get<double>();
  }
  return out;
}

}  // namespace lmforge::experiments
