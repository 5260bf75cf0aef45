// experiments/eval_suite.cpp -- suite config, reading task data, running a model over the examples
// split across ranks, gathering and scoring on rank 0, result files and gates.
#include "experiments/eval_suite.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <yaml-cpp/yaml.h>

#include "core/files.h"
#include "data/template.h"
#include "data/tokenizer.h"
#include "experiments/run_record.h"
#include "parallel/comm.h"
#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lmforge::experiments {

namespace {

const std::map<std::string, std::vector<std::string>>& metrics_by_kind() {
  static const std::map<std::string, std::vector<std::string>> m = {
      {"generate", {"exact_match", "f1", "bleu", "rouge_l"}},
      {"choice", {"accuracy"}},
      {"perplexity", {"perplexity", "bits_per_byte"}},
  };
  return m;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string kind_of_metric(const std::string& metric) {
  for (const auto& [kind, names] : metrics_by_kind())
    if (std::find(names.begin(), names.end(), metric) != names.end()) return kind;
  return "";
}

void read_task(config::Section& s, const std::string& file, EvalTaskConfig& t) {
  s.field("name", t.name, {}, config::Need::required);
  s.field("data", t.data, {}, config::Need::required);
  if (!t.data.empty() && fs::path(t.data).is_relative() && !s.file_of("data").empty())
    t.data = (fs::path(s.file_of("data")).parent_path() / t.data).lexically_normal().string();
  s.field("kind", t.kind, {"auto", "generate", "choice", "perplexity"});
  if (s.has("template")) {
    config::Section ts = s.child("template");
    data::PromptTemplate pt;
    data::read_template(ts, pt);
    ts.finish();
    t.template_name = pt.name;
    t.prompt = pt.prompt;
    if (!pt.response.empty()) t.reference = pt.response;
  }
  s.field("metrics", t.metrics, config::Need::required);
  const std::vector<std::string> steps = {"lowercase", "punctuation", "articles", "whitespace"};
  std::vector<std::string> normalize = steps;  // SQuAD's normalisation in full
  s.field("normalize", normalize);
  auto on = [&](const char* step) { return std::find(normalize.begin(), normalize.end(), step) != normalize.end(); };
  t.normalize = {on("lowercase"), on("punctuation"), on("articles"), on("whitespace")};
  for (const auto& n : normalize)
    if (std::find(steps.begin(), steps.end(), n) == steps.end())
      s.error("normalize", "unknown normalisation '" + n + "'; available: " + join_names(steps));
  s.field("max_new_tokens", t.sampling.max_new_tokens, config::at_least(1));
  s.field("temperature", t.sampling.temperature, config::at_least(0));
  s.field("top_k", t.sampling.top_k, config::at_least(0));
  s.field("top_p", t.sampling.top_p, config::between(0, 1));
  int64_t seed = 0;
  s.field("seed", seed, config::at_least(0));
  t.sampling.seed = static_cast<uint64_t>(seed);
  s.field("stop", t.stop);
  s.field("max_examples", t.max_examples, config::at_least(0));
  s.field("window", t.window, config::at_least(2));
  if (t.kind == "auto" && !t.data.empty())
    t.kind = fs::path(t.data).extension() == ".txt" ? "perplexity" : "auto";  // JSONL: decided by its records
  std::string first_kind;
  for (const auto& m : t.metrics) {
    std::string kind = kind_of_metric(m);
    if (kind.empty()) {
      s.error("metrics", "unknown metric '" + m + "'; available: " + join_names(eval_metric_names()));
    } else if (t.kind != "auto" && kind != t.kind) {
      s.error("metrics", "metric '" + m + "' needs a " + kind + " task, but this task is " + t.kind + " (" +
                             t.kind + " metrics: " + join_names(metrics_by_kind().at(t.kind)) + ")");
    } else if (!first_kind.empty() && kind != first_kind) {
      s.error("metrics", "metrics '" + m + "' (" + kind + ") and those of a " + first_kind + " task cannot be mixed");
    }
    if (first_kind.empty() && !kind.empty()) first_kind = kind;
  }
  if (t.kind == "auto" && !first_kind.empty()) t.kind = first_kind;
  t.where = file;
}

// ----- data ---------------------------------------------------------------------------------

struct Example {
  std::string where;  // file:line
  json record;
};

std::vector<Example> read_jsonl(const std::string& path, int64_t max_examples) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot read the eval data file");
  std::vector<Example> out;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = path + ":" + std::to_string(number);
    json record;
    try {
      record = json::parse(line);
    } catch (const json::parse_error& e) {
      std::string what = e.what();
      throw InputError(where + ": malformed JSON line (" + what.substr(what.find(']') + 2) + ")");
    }
    if (!record.is_object()) throw InputError(where + ": expected a JSON object per line, got " + record.type_name());
    out.push_back({where, std::move(record)});
    if (max_examples > 0 && static_cast<int64_t>(out.size()) == max_examples) break;
  }
  if (out.empty()) throw InputError(path + ": no records");
  return out;
}

std::string read_text_file(const std::string& path) { return read_file(path, path + ": cannot read the eval data file"); }

std::vector<int64_t> encode(const data::Tokenizer& tokenizer, const std::string& text) {
  std::vector<int64_t> ids;
  for (int32_t id : tokenizer.encode(text)) ids.push_back(id);
  return ids;
}

// ----- gathering ----------------------------------------------------------------------------

// Every rank's string, on rank 0 (others get their own only). Collective.
// Tensors travel on `device` (CUDA under NCCL).
std::vector<std::string> gather_strings(parallel::Comm& comm, const std::string& mine, const torch::Device& device) {
  if (comm.size() == 1) return {mine};
  auto lengths = comm.allgather(torch::tensor({static_cast<int64_t>(mine.size())}, torch::kLong).to(device)).cpu();
  int64_t longest = lengths.max().item<int64_t>();
  auto bytes = torch::zeros({longest}, torch::kByte);
  std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  auto all = comm.allgather(bytes.to(device)).cpu().view({comm.size(), longest}).contiguous();
  std::vector<std::string> out;
  for (int r = 0; r < comm.size(); ++r)
    out.emplace_back(static_cast<const char*>(all[r].data_ptr()), static_cast<size_t>(lengths[r].item<int64_t>()));
  return out;
}

// Runs `work(i)` for this rank's share of 0..n-1 and returns every item's result in index order
// on rank 0 (an empty array elsewhere).
template <typename Work>
json map_examples(size_t n, EvalModel& m, parallel::Comm& comm, Work work) {
  json mine = json::array();
  for (size_t i = static_cast<size_t>(comm.rank()); i < n; i += static_cast<size_t>(comm.size())) mine.push_back(work(i));
  std::vector<std::string> parts = gather_strings(comm, mine.dump(), m.model.parameters().front().device());
  if (comm.rank() != 0) return json::array();
  std::vector<json> ranks;
  for (const auto& p : parts) ranks.push_back(json::parse(p));
  json ordered = json::array();
  for (size_t i = 0; i < n; ++i) ordered.push_back(ranks[i % ranks.size()][i / ranks.size()]);
  return ordered;
}

// ----- task kinds ---------------------------------------------------------------------------

std::string cut_at_stops(std::string text, const std::vector<std::string>& stops) {
  size_t start = text.find_first_not_of(" \t\r\n");  // a generated answer usually starts after a space
  text = start == std::string::npos ? "" : text.substr(start);
  for (const auto& stop : stops)
    if (!stop.empty() && text.find(stop) != std::string::npos) text = text.substr(0, text.find(stop));
  size_t end = text.find_last_not_of(" \t\r\n");
  return end == std::string::npos ? "" : text.substr(0, end + 1);
}

json run_generate(const EvalTaskConfig& t, const std::vector<Example>& examples, EvalModel& m, parallel::Comm& comm) {
  json items = map_examples(examples.size(), m, comm, [&](size_t i) {
    const Example& e = examples[i];
    std::string prompt = data::render_template(t.prompt, e.record, e.where, t.template_name);
    std::string reference = data::render_template(t.reference, e.record, e.where, t.template_name);
    std::vector<int64_t> ids = encode(m.tokenizer, prompt);
    if (ids.empty()) throw InputError(e.where + ": the rendered prompt is empty");
    int64_t room = m.max_positions > 0 ? m.max_positions - t.sampling.max_new_tokens : 0;
    if (m.max_positions > 0 && room < 1)
      throw InputError(t.where + ": max_new_tokens " + std::to_string(t.sampling.max_new_tokens) +
                       " leaves no room for a prompt in the model's " + std::to_string(m.max_positions) + " positions");
    if (room > 0 && static_cast<int64_t>(ids.size()) > room) ids.erase(ids.begin(), ids.end() - room);  // keep the end
    trainer::SamplingConfig s = t.sampling;
    s.stop_ids = m.stop_ids;
    trainer::Generation g = trainer::generate(m.model, ids, s);
    std::vector<int32_t> out;
    for (int64_t id : g.ids)
      if (std::find(m.stop_ids.begin(), m.stop_ids.end(), id) == m.stop_ids.end()) out.push_back(static_cast<int32_t>(id));
    return json{{"index", i}, {"prompt", prompt}, {"prediction", cut_at_stops(m.tokenizer.decode(out), t.stop)},
                {"reference", reference}};
  });
  if (comm.rank() != 0) return json::object();
  std::vector<std::string> predictions, references;
  for (const auto& item : items) {
    predictions.push_back(item["prediction"]);
    references.push_back(item["reference"]);
  }
  json metrics = json::object();
  for (const auto& name : t.metrics) {
    if (name == "exact_match") metrics[name] = exact_match(predictions, references, t.normalize);
    if (name == "f1") metrics[name] = token_f1(predictions, references, t.normalize);
    if (name == "rouge_l") metrics[name] = rouge_l(predictions, references);
    if (name == "bleu") {
      std::vector<std::vector<std::string>> refs;
      for (const auto& r : references) refs.push_back({r});
      metrics[name] = corpus_bleu(predictions, refs).score;
    }
  }
  return {{"metrics", metrics}, {"examples", items}};
}

// Sum of log p(continuation | context) over the continuation's tokens.
double continuation_logprob(EvalModel& m, const std::vector<int64_t>& context, const std::vector<int64_t>& continuation,
                            const std::string& where) {
  std::vector<int64_t> ids = context;
  ids.insert(ids.end(), continuation.begin(), continuation.end());
  if (m.max_positions > 0 && static_cast<int64_t>(ids.size()) > m.max_positions)
    ids.erase(ids.begin(), ids.end() - m.max_positions);
  if (continuation.empty() || static_cast<int64_t>(continuation.size()) >= static_cast<int64_t>(ids.size()))
    throw InputError(where + ": a choice is empty, or leaves no context within the model's positions");
  trainer::TokenScores s = trainer::score_tokens(m.model, ids);
  double sum = 0;
  for (size_t k = s.logprobs.size() - continuation.size(); k < s.logprobs.size(); ++k) sum += s.logprobs[k];
  return sum;
}

json run_choice(const EvalTaskConfig& t, const std::vector<Example>& examples, EvalModel& m, parallel::Comm& comm) {
  json items = map_examples(examples.size(), m, comm, [&](size_t i) {
    const Example& e = examples[i];
    const json& choices = e.record.contains("choices") ? e.record["choices"] : json();
    if (!choices.is_array() || choices.size() < 2 ||
        !std::all_of(choices.begin(), choices.end(), [](const json& c) { return c.is_string(); }))
      throw InputError(e.where + ": a choice task needs \"choices\": a list of at least two strings");
    const json& answer = e.record.contains("answer") ? e.record["answer"] : json();
    int64_t gold = -1;
    if (answer.is_number_integer()) gold = answer.get<int64_t>();
    for (size_t c = 0; answer.is_string() && c < choices.size(); ++c)
      if (choices[c] == answer) gold = static_cast<int64_t>(c);
    if (gold < 0 || gold >= static_cast<int64_t>(choices.size()))
      throw InputError(e.where + ": \"answer\" must be the index of a choice or one of the choices' texts");
    std::string prompt = data::render_template(t.prompt, e.record, e.where, t.template_name);
    std::vector<int64_t> context = encode(m.tokenizer, prompt);
    std::vector<double> logprobs;
    for (const auto& c : choices) logprobs.push_back(continuation_logprob(m, context, encode(m.tokenizer, c), e.where));
    int64_t best = std::max_element(logprobs.begin(), logprobs.end()) - logprobs.begin();
    return json{{"index", i}, {"prompt", prompt}, {"choice_logprobs", logprobs}, {"prediction", choices[best]},
                {"reference", choices[gold]}, {"gold", gold}};
  });
  if (comm.rank() != 0) return json::object();
  std::vector<std::vector<double>> logprobs;
  std::vector<int64_t> gold;
  for (const auto& item : items) {
    logprobs.push_back(item["choice_logprobs"].get<std::vector<double>>());
    gold.push_back(item["gold"]);
  }
  return {{"metrics", {{"accuracy", multiple_choice_accuracy(logprobs, gold)}}}, {"examples", items}};
}

json run_perplexity(const EvalTaskConfig& t, const std::vector<std::string>& texts, EvalModel& m, parallel::Comm& comm) {
  int64_t window = m.max_positions > 0 ? std::min(t.window, m.max_positions) : t.window;
  // Windows overlap by one token, so every token after a text's first is predicted exactly once.
  std::vector<std::vector<int64_t>> windows;
  int64_t bytes = 0;
  for (const auto& text : texts) {
    bytes += static_cast<int64_t>(text.size());
    std::vector<int64_t> ids = encode(m.tokenizer, text);
    for (size_t start = 0; start + 1 < ids.size(); start += static_cast<size_t>(window - 1))
      windows.emplace_back(ids.begin() + start, ids.begin() + std::min(ids.size(), start + static_cast<size_t>(window)));
  }
  if (windows.empty()) throw InputError(t.data + ": too little text to score (fewer than two tokens)");
  json items = map_examples(windows.size(), m, comm, [&](size_t i) {
    trainer::TokenScores s = trainer::score_tokens(m.model, windows[i]);
    return json{{"nll", s.nll}, {"tokens", s.logprobs.size()}};
  });
  if (comm.rank() != 0) return json::object();
  double nll = 0;
  int64_t tokens = 0;
  for (const auto& item : items) {
    nll += item["nll"].get<double>();
    tokens += item["tokens"].get<int64_t>();
  }
  json metrics = json::object();
  for (const auto& name : t.metrics)
    metrics[name] = name == "perplexity" ? perplexity(nll, tokens) : bits_per_byte(nll, bytes);
  return {{"metrics", metrics}, {"nll", nll}, {"tokens", tokens}, {"bytes", bytes}, {"windows", windows.size()}};
}

json run_task(const EvalTaskConfig& t, EvalModel& m, parallel::Comm& comm) {
  std::string kind = t.kind;
  json out;
  const std::string extension = fs::path(t.data).extension().string();
  const bool text_file = extension == ".txt" || (kind == "perplexity" && extension != ".jsonl");
  if (text_file) {
    if (kind != "perplexity")
      throw InputError(t.where + ": task '" + t.name + "': " + t.data + " is plain text, which only a perplexity task reads");
    out = run_perplexity(t, {read_text_file(t.data)}, m, comm);
  } else {
    std::vector<Example> examples = read_jsonl(t.data, t.max_examples);
    if (kind == "auto") kind = examples[0].record.contains("choices") ? "choice" : "generate";
    if (kind == "generate") out = run_generate(t, examples, m, comm);
    if (kind == "choice") out = run_choice(t, examples, m, comm);
    if (kind == "perplexity") {
      std::vector<std::string> texts;
      for (const auto& e : examples)
        texts.push_back(data::render_template(t.prompt, e.record, e.where, t.template_name) +
                        data::render_template(t.reference, e.record, e.where, t.template_name));
      out = run_perplexity(t, texts, m, comm);
    }
  }
  if (comm.rank() != 0) return out;
  data::PromptTemplate used{t.template_name, t.prompt, t.reference, {}};
  out["kind"] = kind;
  out["data"] = t.data;
  out["dataset_sha256"] = sha256_file(t.data);
  out["template"] = {{"name", t.template_name.empty() ? "default" : t.template_name}, {"version", used.version()},
                     {"prompt", t.prompt}, {"reference", t.reference}};
  if (kind == "generate")
    out["generation"] = {{"max_new_tokens", t.sampling.max_new_tokens}, {"temperature", t.sampling.temperature},
                         {"top_k", t.sampling.top_k}, {"top_p", t.sampling.top_p}, {"seed", t.sampling.seed},
                         {"stop", t.stop}};
  return out;
}

}  // namespace

const std::vector<std::string>& eval_metric_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all;
    for (const auto& [kind, metrics] : metrics_by_kind()) all.insert(all.end(), metrics.begin(), metrics.end());
    std::sort(all.begin(), all.end());
    return all;
  }();
  return names;
}

void read_eval_suites(config::Section& eval_section, std::vector<EvalSuiteConfig>& suites) {
  for (config::Section& ss : eval_section.items("suites")) {
    EvalSuiteConfig suite;
    ss.field("name", suite.name, {}, config::Need::required);
    for (config::Section& ts : ss.items("tasks")) {
      EvalTaskConfig task;
      read_task(ts, ts.file_of("name"), task);
      ts.finish();
      suite.tasks.push_back(std::move(task));
    }
    if (suite.tasks.empty()) ss.error("name", "suite '" + suite.name + "' has no tasks");
    ss.finish();
    suites.push_back(std::move(suite));
  }
}

std::vector<EvalSuiteConfig> load_eval_suites(const std::string& path) {
  config::Diagnostics diag;
  config::Layers layers = config::load_layers(path, {}, diag);
  if (layers.empty()) throw config::ConfigError(diag.format());
  YAML::Node resolved(YAML::NodeType::Map);
  config::Section root(layers, diag, &resolved);
  std::vector<EvalSuiteConfig> suites;
  if (root.has("eval")) {
    config::Section eval = root.child("eval");
    read_eval_suites(eval, suites);
  } else {
    read_eval_suites(root, suites);
    root.finish();
  }
  if (diag.empty() && suites.empty()) throw InputError(path + ": no eval suites (expected `suites:` or `eval.suites:`)");
  if (!diag.empty()) throw config::ConfigError(diag.format());
  return suites;
}

json run_eval_suite(const EvalSuiteConfig& suite, EvalModel& m, parallel::Comm& comm, int64_t step) {
  torch::NoGradGuard no_grad;
  m.model.eval();
  json result = {{"suite", suite.name}, {"step", step}, {"tasks", json::object()}};
  for (const auto& task : suite.tasks) result["tasks"][task.name] = run_task(task, m, comm);
  return result;
}

json eval_metrics_row(const json& result) {
  json row = {{"step", result.value("step", int64_t{0})}, {"suite", result.value("suite", "")}};
  for (const auto& [task, r] : result["tasks"].items())
    for (const auto& [metric, value] : r["metrics"].items())
      row["eval/" + row["suite"].get<std::string>() + "/" + task + "/" + metric] = value;
  return row;
}

std::string write_eval_result(const std::string& dir, const json& result) {
  fs::path folder = fs::path(dir) / "eval" / result["suite"].get<std::string>();
  fs::create_directories(folder);
  std::string path = (folder / (std::to_string(result["step"].get<int64_t>()) + ".json")).string();
  write_file_atomic(path, result.dump(1) + "\n");
  return path;
}

RecordedEval record_eval_result(const std::string& dir, const json& result, trainer::MetricsSink* run_metrics) {
  RecordedEval recorded{write_eval_result(dir, result), eval_metrics_row(result)};
  if (run_metrics) run_metrics->append_metrics(recorded.row);
  return recorded;
}

std::string check_gate(const std::string& gate, const json& row) {
  size_t at = gate.find_first_of("<>");
  auto name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '/' || c == '-'; };
  if (at == std::string::npos || at == 0 || !std::all_of(gate.begin(), gate.begin() + at, name_char))
    throw InputError("--gate '" + gate + "': expected METRIC>=VALUE (or <=, >, <), e.g. exact_match>=0.5");
  bool or_equal = at + 1 < gate.size() && gate[at + 1] == '=';
  std::string metric = gate.substr(0, at), op = gate.substr(at, or_equal ? 2 : 1), number = gate.substr(at + op.size());
  double threshold = 0;
  try {
    size_t used = 0;
    threshold = std::stod(number, &used);
    if (used != number.size()) throw std::invalid_argument(number);
  } catch (const std::exception&) {
    throw InputError("--gate '" + gate + "': '" + number + "' is not a number");
  }
  std::vector<std::string> matches, available;
  for (const auto& [key, value] : row.items()) {
    if (!value.is_number() || key == "step") continue;
    available.push_back(key);
    if (key == metric || (key.size() > metric.size() && key.compare(key.size() - metric.size(), metric.size(), metric) == 0 &&
                          key[key.size() - metric.size() - 1] == '/'))
      matches.push_back(key);
  }
  if (matches.size() != 1)
    throw InputError("--gate '" + gate + "': " + (matches.empty() ? "no" : "more than one") + " metric matches '" +
                     metric + "'; available: " + join_names(available));
  double value = row[matches[0]].get<double>();
  bool met = op == ">=" ? value >= threshold : op == "<=" ? value <= threshold : op == ">" ? value > threshold : value < threshold;
  if (met) return "";
  return matches[0] + " = " + std::to_string(value) + ", gate " + op + " " + number;
}

}  // namespace lmforge::experiments
