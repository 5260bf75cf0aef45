// trainer/hf_model.cpp -- config.json parsing for the llama family and gpt2, HF <-> lmforge tensor
// names (prefixes, GPT-2 Conv1D transposes, tied heads), sharded loading and saving.
// Tensor bytes go through safetensors.h; the modules are in model.cpp.
#include "trainer/hf_model.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/errors.h"
#include "core/files.h"
#include "core/safetensors.h"

namespace lmforge::trainer {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Typed access to config.json keys with errors that name the file and the key.
class JsonConfig {
 public:
  JsonConfig(json j, std::string file) : j_(std::move(j)), file_(std::move(file)) {}
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  InputError error(const std::string& key, const std::string& what) const {
    return InputError(file_ + ": " + key + ": " + what);
  }
  int64_t integer(const std::string& key, std::optional<int64_t> fallback = std::nullopt, int64_t min = 1) const {
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
  double number(const std::string& key, double fallback, bool positive = true) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_number()) throw error(key, "expected a number, got " + v.dump());
    double x = v.get<double>();
    if (positive && !(x > 0)) throw error(key, "must be positive, got " + v.dump());
    return x;
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_boolean()) throw error(key, "expected true or false, got " + j_[key].dump());
    return j_[key].get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_string()) throw error(key, "expected a string, got " + j_[key].dump());
    return j_[key].get<std::string>();
  }
  std::vector<int64_t> ids(const std::string& key) const {  // an int, a list of ints, or null
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const json& v = j_[key];
    for (const json& x : v.is_array() ? v : json::array({v})) {
      if (!x.is_number_integer()) throw error(key, "expected a token id or a list of ids, got " + v.dump());
      out.push_back(x.get<int64_t>());
    }
    return out;
  }
  const json& raw(const std::string& key) const { return j_[key]; }

 private:
  json j_;
  std::string file_;
};

// RoPE settings: v4 writes rope_theta and rope_scaling at the top level, v5 nests them in
// rope_parameters. Where v4 and v5 differ (yarn with both factor and
// original_max_position_embeddings), the given factor wins, as in v5.
void read_rope(const JsonConfig& j, ModelConfig& c) {
  c.rope_theta = j.number("rope_theta", 10000.0);
  json scaling;
  std::string where = "rope_scaling";
  if (j.has("rope_parameters")) {
    where = "rope_parameters";
    scaling = j.raw("rope_parameters");
    if (!scaling.is_object()) throw j.error(where, "expected an object, got " + scaling.dump());
    if (scaling.contains("rope_theta")) {
      if (!scaling["rope_theta"].is_number() || !(scaling["rope_theta"].get<double>() > 0))
        throw j.error(where + ".rope_theta", "expected a positive number, got " + scaling["rope_theta"].dump());
      c.rope_theta = scaling["rope_theta"].get<double>();
    }
  } else if (j.has("rope_scaling")) {
    scaling = j.raw("rope_scaling");
    if (!scaling.is_object()) throw j.error(where, "expected an object or null, got " + scaling.dump());
  }
  if (scaling.is_null()) return;
  std::string type = "default";
  for (const char* key : {"rope_type", "type"})
    if (scaling.contains(key) && scaling[key].is_string()) type = scaling[key].get<std::string>();
  if (type == "su") type = "longrope";  // early Phi-3 configs
  auto given = [&](const char* key) { return scaling.contains(key) && !scaling[key].is_null(); };
  auto number = [&](const char* key, double fallback) {
    if (!given(key)) return fallback;
    if (!scaling[key].is_number() || !(scaling[key].get<double>() > 0))
      throw j.error(where + "." + key, "expected a positive number, got " + scaling[key].dump());
    return scaling[key].get<double>();
  };
  if (type == "default") return;
  const std::vector<std::string> known = {"linear", "dynamic", "yarn", "longrope", "llama3"};
  if (std::find(known.begin(), known.end(), type) == known.end())
    throw j.error(where, "rope type '" + type + "' is not supported (default, linear, dynamic, yarn, longrope, llama3 are)");
  RopeScaling& r = c.rope;
  r.type = type;
  // Phi-3 (v4) keeps original_max_position_embeddings at the top level.
  double fallback_original = type == "llama3" ? 8192.0 : static_cast<double>(j.integer("original_max_position_embeddings", c.max_seq_len));
  r.original_max_positions = static_cast<int64_t>(number("original_max_position_embeddings", fallback_original));
  double stretch = static_cast<double>(c.max_seq_len) / static_cast<double>(r.original_max_positions);
  r.factor = number("factor", type == "yarn" || type == "longrope" ? stretch : 1.0);
  if (type == "llama3") {
    r.low_freq_factor = number("low_freq_factor", 1.0);
    r.high_freq_factor = number("high_freq_factor", 4.0);
    if (r.high_freq_factor <= r.low_freq_factor) throw j.error(where, "high_freq_factor must exceed low_freq_factor");
  }
  if (type == "yarn" || type == "longrope") r.attention_factor = number("attention_factor", 0.0);
  if (type == "yarn") {
    r.beta_fast = number("beta_fast", 32.0);
    r.beta_slow = number("beta_slow", 1.0);
    r.mscale = number("mscale", 0.0);
    r.mscale_all_dim = number("mscale_all_dim", 0.0);
    if (given("truncate")) {
      if (!scaling["truncate"].is_boolean()) throw j.error(where + ".truncate", "expected true or false");
      r.truncate = scaling["truncate"].get<bool>();
    }
  }
  if (type == "longrope") {
    for (auto [key, out] : {std::pair{"short_factor", &r.short_factor}, std::pair{"long_factor", &r.long_factor}}) {
      const json& v = given(key) ? scaling[key] : json();
      bool ok = v.is_array() && static_cast<int64_t>(v.size()) == c.head_dim() / 2;
      for (const json& x : v.is_array() ? v : json::array()) ok = ok && x.is_number() && x.get<double>() > 0;
      if (!ok)
        throw j.error(where + "." + key, "expected a list of " + std::to_string(c.head_dim() / 2) +
                                             " positive numbers (head_dim / 2), got " + (v.is_null() ? "none" : v.dump()));
      for (const json& x : v) out->push_back(x.get<double>());
    }
  }
}

// Which layers slide: v5's layer_types, else qwen2's max_window_layers (layers from it on), else all.
void read_sliding_window(const JsonConfig& j, const std::string& model_type, ModelConfig& c) {
  bool windowed = model_type == "qwen2" ? j.boolean("use_sliding_window", false) : j.has("sliding_window");
  if (!windowed || !j.has("sliding_window")) return;
  c.sliding_window = j.integer("sliding_window");
  if (j.has("layer_types")) {
    const json& types = j.raw("layer_types");
    bool ok = types.is_array() && static_cast<int64_t>(types.size()) == c.n_layers;
    for (const json& t : types.is_array() ? types : json::array())
      ok = ok && (t == "sliding_attention" || t == "full_attention");
    if (!ok)
      throw j.error("layer_types", "expected " + std::to_string(c.n_layers) +
                                       " entries of \"sliding_attention\" or \"full_attention\", got " + types.dump());
    for (const json& t : types) c.layer_types.push_back(t.get<std::string>());
  } else if (model_type == "qwen2") {
    int64_t first = j.integer("max_window_layers", 28);  // Qwen2Config's default
    for (int64_t i = 0; i < c.n_layers; ++i) c.layer_types.push_back(i >= first ? "sliding_attention" : "full_attention");
  }
}

ModelConfig read_llama_family(const JsonConfig& j, const std::string& model_type) {
  ModelConfig c;
  c.arch = "llama";
  c.vocab_size = j.integer("vocab_size");
  c.hidden_size = j.integer("hidden_size");
  c.n_layers = j.integer("num_hidden_layers");
  c.n_heads = j.integer("num_attention_heads");
  c.n_kv_heads = j.integer("num_key_value_heads", c.n_heads);
  c.intermediate_size = j.integer("intermediate_size");
  c.max_seq_len = j.integer("max_position_embeddings", 2048);
  c.norm_eps = j.number("rms_norm_eps", 1e-6);
  c.tie_embeddings = j.boolean("tie_word_embeddings", false);
  c.head_size = j.integer("head_dim", c.hidden_size / c.n_heads);
  if (!j.has("head_dim") && c.hidden_size % c.n_heads != 0)
    throw j.error("hidden_size", std::to_string(c.hidden_size) + " is not divisible by num_attention_heads " +
                                     std::to_string(c.n_heads) + " and head_dim is not given");
  if (c.n_heads % c.n_kv_heads != 0)
    throw j.error("num_key_value_heads", "num_attention_heads " + std::to_string(c.n_heads) +
                                             " is not a multiple of " + std::to_string(c.n_kv_heads));
  if (c.head_dim() % 2 != 0) throw j.error("head_dim", "RoPE needs an even head dimension");
  c.activation = j.string("hidden_act", "silu");
  if (c.activation != "silu" && c.activation != "gelu" && c.activation != "relu")
    throw j.error("hidden_act", "'" + c.activation + "' is not supported (silu, gelu, relu are)");
  read_rope(j, c);
  if (model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
  } else if (model_type == "llama") {
    c.qkv_bias = c.o_bias = j.boolean("attention_bias", false);
    c.mlp_bias = j.boolean("mlp_bias", false);
  }
  read_sliding_window(j, model_type, c);
  return c;
}

ModelConfig read_gpt2(const JsonConfig& j) {
  ModelConfig c;
  c.arch = "gpt2";
  auto either = [&](const char* name, const char* alias) { return j.has(name) || !j.has(alias) ? name : alias; };
  c.vocab_size = j.integer("vocab_size");
  c.hidden_size = j.integer(either("n_embd", "hidden_size"));
  c.n_layers = j.integer(either("n_layer", "num_hidden_layers"));
  c.n_heads = j.integer(either("n_head", "num_attention_heads"));
  c.max_seq_len = j.integer(either("n_positions", "max_position_embeddings"), 1024);
  c.intermediate_size = j.integer("n_inner", 4 * c.hidden_size);
  c.norm_eps = j.number("layer_norm_epsilon", 1e-5);
  c.tie_embeddings = j.boolean("tie_word_embeddings", true);
  if (c.hidden_size % c.n_heads != 0)
    throw j.error("n_head", "n_embd " + std::to_string(c.hidden_size) + " is not divisible by " +
                                std::to_string(c.n_heads));
  std::string act = j.string("activation_function", "gelu_new");
  if (act == "gelu_new" || act == "gelu_pytorch_tanh") {
    c.activation = "gelu_new";
  } else if (act == "gelu" || act == "relu" || act == "silu") {
    c.activation = act;
  } else {
    throw j.error("activation_function", "'" + act + "' is not supported (gelu_new, gelu, relu, silu are)");
  }
  if (!j.boolean("scale_attn_weights", true)) throw j.error("scale_attn_weights", "false is not supported");
  if (j.boolean("scale_attn_by_inverse_layer_idx", false))
    throw j.error("scale_attn_by_inverse_layer_idx", "true is not supported");
  return c;
}


// GPT-2 stores these as Conv1D, (in, out): the transpose of a Linear weight.
bool is_conv1d_weight(const ModelConfig& c, const std::string& name) {
  return c.arch == "gpt2" && (ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
                              ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight"));
}

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

std::string family_model_type(const ModelConfig& c) {
  if (c.arch == "gpt2") return "gpt2";
  if (c.qkv_bias && !c.o_bias && !c.mlp_bias) return "qwen2";
  if (c.sliding_window > 0 && !c.qkv_bias && !c.o_bias && !c.mlp_bias) return "mistral";
  return "llama";
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
  json j;
  std::string type = family_model_type(c);
  j["model_type"] = type;
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["torch_dtype"] = dtype_name(dtype);
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (type == "gpt2") {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.n_layers;
    j["n_head"] = c.n_heads;
    j["n_positions"] = c.max_seq_len;
    j["n_ctx"] = c.max_seq_len;
    j["n_inner"] = c.ffn_size();
    j["activation_function"] = c.activation.empty() ? "gelu_new" : c.activation;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["scale_attn_weights"] = true;
    return j;
  }
  j["architectures"] = {type == "qwen2" ? "Qwen2ForCausalLM" : type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.ffn_size();
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.kv_heads();
  j["head_dim"] = c.head_dim();
  j["hidden_act"] = c.activation.empty() ? "silu" : c.activation;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;  // the v4 spelling: v4 reads it and v5 migrates it
  const RopeScaling& r = c.rope;
  if (r.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    json& out = j["rope_scaling"] = {{"rope_type", r.type}, {"factor", r.factor}};
    out["original_max_position_embeddings"] = r.original_max_positions;
    if (r.type == "llama3") {
      out["low_freq_factor"] = r.low_freq_factor;
      out["high_freq_factor"] = r.high_freq_factor;
    }
    if (r.attention_factor > 0) out["attention_factor"] = r.attention_factor;
    if (r.type == "yarn") {
      out["beta_fast"] = r.beta_fast;
      out["beta_slow"] = r.beta_slow;
      out["truncate"] = r.truncate;
      if (r.mscale > 0) out["mscale"] = r.mscale;
      if (r.mscale_all_dim > 0) out["mscale_all_dim"] = r.mscale_all_dim;
    }
    if (r.type == "longrope") {
      out["short_factor"] = r.short_factor;
      out["long_factor"] = r.long_factor;
    }
  }
  if (!c.layer_types.empty()) j["layer_types"] = c.layer_types;
  if (type == "llama") {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  } else if (type == "qwen2") {
    j["use_sliding_window"] = c.sliding_window > 0;
    if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
    // v4 reads max_window_layers: the first sliding layer (layer_types above is v5's spelling)
    auto first = std::find(c.layer_types.begin(), c.layer_types.end(), "sliding_attention");
    j["max_window_layers"] = c.layer_types.empty() ? 0 : first - c.layer_types.begin();
  } else {
    j["sliding_window"] = c.sliding_window;  // mistral is only chosen with a window
  }
  return j;
}

}  // namespace

ModelConfig read_hf_config(const std::string& dir) {
  std::string file = (fs::path(dir) / "config.json").string();
  if (!fs::is_directory(dir)) throw InputError(dir + ": not a directory");
  json raw = read_json_file(file);
  if (!raw.is_object()) throw InputError(file + ": expected a JSON object");
  JsonConfig j(raw, file);
  std::string type = j.string("model_type", "");
  ModelConfig c;
  if (type == "llama" || type == "mistral" || type == "qwen2") {
    c = read_llama_family(j, type);
  } else if (type == "gpt2") {
    c = read_gpt2(j);
  } else {
    throw j.error("model_type", type.empty() ? "missing" : "'" + type + "' is not supported (llama, mistral, qwen2, gpt2 are)");
  }
  c.bos_token_id = j.has("bos_token_id") ? j.integer("bos_token_id", std::nullopt, 0) : -1;
  c.eos_token_ids = j.ids("eos_token_id");
  fs::path generation = fs::path(dir) / "generation_config.json";
  if (fs::exists(generation)) {  // generation_config.json's eos ids win, as in transformers' generate()
    json g = read_json_file(generation.string());
    if (g.is_object()) {
      auto ids = JsonConfig(g, generation.string()).ids("eos_token_id");
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
  const std::string prefix = cfg.arch == "gpt2" ? "transformer." : "model.";

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
      bool transposed = hf_layout && is_conv1d_weight(cfg, name);
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
    std::string msg = dir + ": the weights do not match the config (" + family_model_type(cfg) + ", " +
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
    if (hf_layout && is_conv1d_weight(cfg, name)) t = t.t();
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
  fs::create_directories(dir);
  NamedTensors tensors;
  for (const auto& item : model.named_parameters()) {
    torch::Tensor t = item.value().detach().to(torch::kCPU, options.dtype);
    if (is_conv1d_weight(cfg, item.key())) t = t.t();
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
  fs::path dir = fs::path(run_dir) / "export";
  HfSaveOptions options;
  options.copy_files_from = cfg.from;
  save_hf_model(model, cfg, dir.string(), options);
  std::ofstream card((dir / "README.md").string());
  card << "# " << fs::path(run_dir).filename().string() << "\n\n"
       << "A " << family_model_type(cfg) << " causal language model (" << model.num_parameters()
       << " parameters) trained with lmforge "
       << (cfg.from.empty() ? std::string("from a random initialisation") : "starting from `" + cfg.from + "`")
       << ".\nThe run directory `" << run_dir << "` holds the resolved config (config.yaml), metrics and lineage "
       << "(meta.json).\n\nLoad with `AutoModelForCausalLM.from_pretrained(\"<this directory>\")`.\n";
}

}  // namespace lmforge::trainer
