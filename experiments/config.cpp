// experiments/config.cpp -- assembles the sections in their canonical order and checks the rules
// that span sections. What each key means is defined by its module's read_*_config.
#include "experiments/config.h"

#include <yaml-cpp/yaml.h>

#include "core/config_reader.h"
#include "data/hf_tokenizer.h"
#include "trainer/parallelize.h"
#include "trainer/peft/apply.h"

#include <map>

namespace lmforge {

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  config::Diagnostics diag;
  config::Layers layers = config::load_layers(path, overrides, diag);
  if (layers.empty()) throw config::ConfigError(diag.format());

  Config c;
  c.source_file = path;
  YAML::Node resolved(YAML::NodeType::Map);
  config::Section root(layers, diag, &resolved);
  auto section = [&](const char* name, auto read, auto& value) {
    config::Section s = root.child(name);
    read(s, value);
    s.finish();
    return s;
  };
  section("run", experiments::read_run_config, c.run);
  config::Section model = section("model", trainer::read_model_config, c.model);
  // A model directory brings its own tokenizer unless the tokenizer section says otherwise.
  if (!c.model.from.empty() && diag.empty()) c.tokenizer = data::tokenizer_of_model_dir(c.model.from);
  section("tokenizer", data::read_tokenizer_config, c.tokenizer);
  section("data", data::read_data_config, c.data);
  config::Section peft = section("peft", trainer::read_peft_config, c.peft);
  section("optim", trainer::read_optim_config, c.optim);
  section("schedule", trainer::read_schedule_config, c.schedule);
  config::Section train = section("train", trainer::read_train_config, c.train);
  config::Section parallel = section("parallel", parallel::read_parallel_config, c.parallel);
  section("checkpoint", trainer::read_checkpoint_config, c.checkpoint);
  config::Section eval = root.child("eval");  // two modules share it: held-out loss and eval suites
  trainer::read_eval_config(eval, c.eval);
  experiments::read_eval_suites(eval, c.eval_suites);
  eval.finish();
  section("logging", experiments::read_logging_config, c.logging);
  root.finish();

  // Loading the tokenizer needs a valid tokenizer section (kind bpe without a path cannot load).
  int64_t tokenizer_vocab = diag.empty() ? data::make_tokenizer(c.tokenizer)->vocab_size() : 0;
  if (c.model.vocab_size < tokenizer_vocab)
    model.error("vocab_size", "model.vocab_size " + std::to_string(c.model.vocab_size) +
                                  " is smaller than the tokenizer's " + std::to_string(tokenizer_vocab));
  if (c.train.seq_len > c.model.max_seq_len)
    train.error("seq_len", "train.seq_len " + std::to_string(c.train.seq_len) + " exceeds model.max_seq_len " +
                               std::to_string(c.model.max_seq_len));
  if (c.model.from.empty()) {  // with model.from the sizes come from its config.json: parallelize() checks them
    for (const auto& [key, message] : trainer::tp_layout_errors(c.model, c.parallel.tp)) parallel.error("tp", message);
  }
  if (c.peft.method == trainer::PeftMethod::dora && c.parallel.tp > 1)  // LoRA adapters are sharded with their base layers
    parallel.error("tp", "peft.method dora with parallel.tp " + std::to_string(c.parallel.tp) +
                             " is not supported: DoRA's row norms need the whole weight; use peft.method lora or "
                             "parallel.tp: 1");
  if (c.peft.enabled() && c.peft.from.empty() && diag.empty()) {
    auto [key, message] = trainer::check_peft_against_model(c.model, c.peft);
    if (!key.empty()) peft.error(key, message);
  }
  if (!diag.empty()) throw config::ConfigError(diag.format());
  if (c.data.cache_dir.empty()) c.data.cache_dir = c.run.output_dir + "/cache";

  YAML::Emitter out;
  out << resolved;
  c.resolved_yaml = std::string(out.c_str()) + "\n";
  return c;
}

std::unique_ptr<data::Tokenizer> make_config_tokenizer(const Config& cfg) {
  std::unique_ptr<data::Tokenizer> tokenizer = cfg.model.from.empty() ? nullptr : data::load_hf_tokenizer(cfg.model.from);
  return tokenizer ? std::move(tokenizer) : data::make_tokenizer(cfg.tokenizer);
}

static void flatten(const YAML::Node& node, const std::string& path, std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) flatten(kv.second, path.empty() ? kv.first.Scalar() : path + "." + kv.first.Scalar(), out);
  } else {
    YAML::Emitter e;
    e << YAML::Flow << node;
    out[path] = e.c_str();
  }
}

std::vector<std::string> config_differences(const std::string& yaml_a, const std::string& yaml_b) {
  std::map<std::string, std::string> a, b;
  flatten(YAML::Load(yaml_a), "", a);
  flatten(YAML::Load(yaml_b), "", b);
  for (const auto& [key, value] : b) a.emplace(key, "(absent)");
  std::vector<std::string> diffs;
  for (const auto& [key, value] : a) {
    auto it = b.find(key);
    std::string other = it == b.end() ? "(absent)" : it->second;
    if (other != value) diffs.push_back(key + ": " + value + " vs " + other);
  }
  return diffs;
}

}  // namespace lmforge
