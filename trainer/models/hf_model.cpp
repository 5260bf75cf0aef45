// trainer/models/hf_model.cpp -- HF model directories for every family: config.json dispatch by
// model_type, HF <-> lmforge tensor names (the family's prefix and transposes, tied heads), sharded
// loading and saving. What each family's keys mean is its own file's; tensor bytes are safetensors.h's.
#include "trainer/models/hf_model.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/errors.h"
#include "core/run_dir.h"
#include "trainer/models/family.h"
#include "trainer/models/hf_config.h"
#include "core/files.h"
#include "core/safetensors.h"

namespace lmforge::trainer {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Buffers some checkpoints carry that are not parameters: causal masks and RoPE tables.
bool is_stray_buffer(const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") || ends_with(name, "rotary_emb.inv_freq") ||
         name == "attn.bias" || name == "attn.masked_bias";
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string name_list(const std::vector<std::string>& names) {
  constexpr size_t kShown = 20;  // enough to see the pattern; the count tells the rest
  std::string s;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) s += "\n    " + names[i];
  if (names.size() > kShown) s += "\n    ... and " + std::to_string(names.size() - kShown) + " more";
  return s;
}

// The safetensors files of an HF directory: the shards of the index, or model.safetensors.
std::vector<std::string> weight_files(const std::string& dir) {
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    json j = read_json_file(index.string());
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw InputError(index.string() + ": needs a \"weight_map\" object");
    std::set<std::string> shards;
    for (const auto& [tensor, file] : j["weight_map"].items()) {
      if (!file.is_string()) throw InputError(index.string() + ": weight_map['" + tensor + "'] is not a file name");
      std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "..")
        throw InputError(index.string() + ": weight_map['" + tensor + "'] = '" + f + "' is not a file in " + dir);
      shards.insert(f);
    }
    std::vector<std::string> files;
    for (const auto& f : shards) files.push_back((fs::path(dir) / f).string());
    return files;
  }
  fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(single)) return {single.string()};
  if (fs::exists(fs::path(dir) / "pytorch_model.bin"))
    throw InputError(dir + ": only pytorch_model.bin (pickle) is there; lmforge reads safetensors only");
  throw InputError(dir + ": no model.safetensors or model.safetensors.index.json");
}

const char* dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kBFloat16: return "bfloat16";
    case torch::kHalf: return "float16";
    case torch::kDouble: return "float64";
    default: return "float32";
  }
}

json hf_config_json(const ModelConfig& c, torch::ScalarType dtype) {
  const Family& family = family_of_arch(c.arch);
  json j;
  std::string type = family.hf_model_type(c);
  j["model_type"] = type;
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["torch_dtype"] = dtype_name(dtype);
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  family.write_hf_config(c, type, j);
  return j;
}

}  // namespace

int64_t HfConfigJson::integer(const std::string& key, std::optional<int64_t> fallback, int64_t min) const {
  if (!has(key)) {
    if (fallback) return *fallback;
    throw error(key, "required, missing");
  }
  const json& v = j_[key];
  if (!v.is_number_integer()) throw error(key, "expected an integer, got " + v.dump());
  int64_t x = v.get<int64_t>();
  if (x < min) throw error(key, "must be at least " + std::to_string(min) + ", got " + std::to_string(x));
  return x;
}

double HfConfigJson::number(const std::string& key, double fallback, bool positive) const {
  if (!has(key)) return fallback;
  const json& v = j_[key];
  if (!v.is_number()) throw error(key, "expected a number, got " + v.dump());
  double x = v.get<double>();
  if (positive && !(x > 0)) throw error(key, "must be positive, got " + v.dump());
  return x;
}

bool HfConfigJson::boolean(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  if (!j_[key].is_boolean()) throw error(key, "expected true or false, got " + j_[key].dump());
  return j_[key].get<bool>();
}

std::string HfConfigJson::string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  if (!j_[key].is_string()) throw error(key, "expected a string, got " + j_[key].dump());
  return j_[key].get<std::string>();
}

std::vector<int64_t> HfConfigJson::ids(const std::string& key) const {
  std::vector<int64_t> out;
  if (!has(key)) return out;
  const json& v = j_[key];
  for (const json& x : v.is_array() ? v : json::array({v})) {
    if (!x.is_number_integer()) throw error(key, "expected a token id or a list of ids, got " + v.dump());
    out.push_back(x.get<int64_t>());
  }
  return out;
}

ModelConfig read_hf_config(const std::string& dir) {
  std::string file = (fs::path(dir) / "config.json").string();
  if (!fs::is_directory(dir)) throw InputError(dir + ": not a directory");
  json raw = read_json_file(file);
  if (!raw.is_object()) throw InputError(file + ": expected a JSON object");
  HfConfigJson j(raw, file);
  std::string type = j.string("model_type", "");
  const Family* family = family_of_model_type(type);
  if (!family) {
    std::string known;
    for (const auto& t : hf_model_types()) known += (known.empty() ? "" : ", ") + t;
    throw j.error("model_type", type.empty() ? "missing" : "'" + type + "' is not supported (" + known + " are)");
  }
  ModelConfig c = family->read_hf_config(j, type);
  c.bos_token_id = j.has("bos_token_id") ? j.integer("bos_token_id", std::nullopt, 0) : -1;
  c.eos_token_ids = j.ids("eos_token_id");
  fs::path generation = fs::path(dir) / "generation_config.json";
  if (fs::exists(generation)) {  // generation_config.json's eos ids win, as in transformers' generate()
    json g = read_json_file(generation.string());
    if (g.is_object()) {
      auto ids = HfConfigJson(g, generation.string()).ids("eos_token_id");
      if (!ids.empty()) c.eos_token_ids = ids;
    }
  }
  c.from = dir;
  return c;
}

// Copies the tensors of `files` into model's parameters. hf_layout: names may lack the family
// prefix, GPT-2 Conv1D weights are transposed, stray buffers and a tied lm_head are skipped.
static void load_weights(CausalLMImpl& model, const ModelConfig& cfg, const std::vector<std::string>& files,
                         const std::string& dir, bool hf_layout) {
  std::map<std::string, torch::Tensor> params;  // lmforge name -> parameter
  for (const auto& item : model.named_parameters()) params[item.key()] = item.value();
  const Family& family = family_of_arch(cfg.arch);
  const std::string& prefix = family.hf_prefix;

  std::vector<std::string> unexpected, misshaped, duplicated;
  std::set<std::string> seen;  // lmforge names some file supplied, well-shaped or not
  std::map<std::string, std::pair<const SafetensorsFile*, std::string>> sources;  // lmforge name -> (file, HF name)
  std::vector<SafetensorsFile> opened;
  opened.reserve(files.size());
  for (const auto& f : files) opened.emplace_back(f);
  for (const SafetensorsFile& file : opened) {
    for (const std::string& hf_name : file.names()) {
      if (hf_layout && is_stray_buffer(hf_name)) continue;
      std::string name =
          !hf_layout || params.count(hf_name) || starts_with(hf_name, "lm_head.") ? hf_name : prefix + hf_name;
      if (hf_layout && name == "lm_head.weight" && cfg.tie_embeddings) continue;  // tied: the embedding is the head
      auto it = params.find(name);
      if (it == params.end()) {
        unexpected.push_back(hf_name + " (" + fs::path(file.path()).filename().string() + ")");
        continue;
      }
      if (!seen.insert(name).second) {
        duplicated.push_back(hf_name);
        continue;
      }
      std::vector<int64_t> shape = file.shape(hf_name);
      bool transposed = hf_layout && family.hf_transposed(name);
      if (transposed && shape.size() == 2) std::swap(shape[0], shape[1]);
      if (shape != it->second.sizes().vec()) {
        std::vector<int64_t> want = it->second.sizes().vec();
        if (transposed) std::swap(want[0], want[1]);
        misshaped.push_back(hf_name + " is " + shape_str(file.shape(hf_name)) + ", config.json implies " + shape_str(want));
        continue;
      }
      if (!torch::isFloatingType(file.dtype(hf_name))) {
        misshaped.push_back(hf_name + " has integer dtype " + std::string(c10::toString(file.dtype(hf_name))));
        continue;
      }
      sources[name] = {&file, hf_name};
    }
  }
  std::vector<std::string> missing;
  for (const auto& [name, p] : params)
    if (!seen.count(name)) missing.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty() || !duplicated.empty()) {
    std::string msg = dir + ": the weights do not match the config (" + family_of_arch(cfg.arch).hf_model_type(cfg) + ", " +
                      std::to_string(cfg.n_layers) + " layers, hidden " + std::to_string(cfg.hidden_size) + ")";
    if (!missing.empty()) msg += "\n  missing " + std::to_string(missing.size()) + ":" + name_list(missing);
    if (!unexpected.empty()) msg += "\n  unexpected " + std::to_string(unexpected.size()) + ":" + name_list(unexpected);
    if (!misshaped.empty()) msg += "\n  wrong shape or dtype " + std::to_string(misshaped.size()) + ":" + name_list(misshaped);
    if (!duplicated.empty()) msg += "\n  in more than one shard:" + name_list(duplicated);
    throw InputError(msg);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, source] : sources) {
    torch::Tensor t = source.first->view(source.second);
    if (hf_layout && family.hf_transposed(name)) t = t.t();
    params[name].copy_(t);  // converts bf16/f16 to the parameter's dtype
  }
}

void load_hf_weights(CausalLMImpl& model, const ModelConfig& cfg) {
  std::vector<std::string> files = weight_files(cfg.from);
  for (const auto& f : files)
    if (!fs::exists(f))
      throw InputError(cfg.from + "/model.safetensors.index.json names " + fs::path(f).filename().string() +
                       ", which does not exist");
  load_weights(model, cfg, files, cfg.from, /*hf_layout=*/true);
}

void load_lmforge_weights(CausalLMImpl& model, const ModelConfig& cfg, const std::string& file) {
  load_weights(model, cfg, {file}, file, /*hf_layout=*/false);
}

CausalLM load_hf_model(const std::string& dir, ModelConfig* cfg_out) {
  ModelConfig cfg = read_hf_config(dir);
  CausalLM model = build_model(cfg);  // build_model loads cfg.from's weights
  if (cfg_out) *cfg_out = cfg;
  return model;
}

const std::vector<std::string>& hf_side_files() {
  static const std::vector<std::string> files = {
      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
      "chat_template.jinja", "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json"};
  return files;
}

void save_hf_model(CausalLMImpl& model, const ModelConfig& cfg, const std::string& dir, const HfSaveOptions& options) {
  const Family& family = family_of_arch(cfg.arch);
  fs::create_directories(dir);
  NamedTensors tensors;
  for (const auto& item : model.named_parameters()) {
    torch::Tensor t = item.value().detach().to(torch::kCPU, options.dtype);
    if (family.hf_transposed(item.key())) t = t.t();
    tensors.emplace_back(item.key(), t.contiguous());
  }
  std::vector<NamedTensors> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (auto& named : tensors) {
    int64_t bytes = named.second.numel() * named.second.element_size();
    if (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(named);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  for (const char* stale : {"model.safetensors", "model.safetensors.index.json"}) fs::remove(fs::path(dir) / stale);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) {
    save_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0], metadata);
  } else {
    json weight_map = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      save_safetensors((fs::path(dir) / name).string(), shards[i], metadata);
      for (const auto& named : shards[i]) weight_map[named.first] = name;
    }
    json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    std::ofstream((fs::path(dir) / "model.safetensors.index.json").string()) << index.dump(2) << "\n";
  }
  std::ofstream((fs::path(dir) / "config.json").string()) << hf_config_json(cfg, options.dtype).dump(2) << "\n";
  if (!options.copy_files_from.empty() && fs::absolute(options.copy_files_from) != fs::absolute(dir)) {
    for (const auto& f : hf_side_files()) {
      fs::path src = fs::path(options.copy_files_from) / f;
      if (fs::exists(src)) fs::copy_file(src, fs::path(dir) / f, fs::copy_options::overwrite_existing);
    }
  }
}

void save_run_export(CausalLMImpl& model, const ModelConfig& cfg, const std::string& run_dir) {
  fs::path dir = RunDir{run_dir}.export_dir();
  HfSaveOptions options;
  options.copy_files_from = cfg.from;
  save_hf_model(model, cfg, dir.string(), options);
  std::ofstream card((dir / "README.md").string());
  card << "# " << fs::path(run_dir).filename().string() << "\n\n"
       << "A " << family_of_arch(cfg.arch).hf_model_type(cfg) << " causal language model (" << model.num_parameters()
       << " parameters) trained with lmforge "
       << (cfg.from.empty() ? std::string("from a random initialisation") : "starting from `" + cfg.from + "`")
       << ".\nThe run directory `" << run_dir << "` holds the resolved config (config.yaml), metrics and lineage "
       << "(meta.json).\n\nLoad with `AutoModelForCausalLM.from_pretrained(\"<this directory>\")`.\n";
}

}  // namespace lmforge::trainer
