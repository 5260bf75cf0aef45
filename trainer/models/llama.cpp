// trainer/models/llama.cpp -- the llama family (llama, mistral, qwen2): which config.json keys it
// reads and writes and everything it registers (family.h). Its modules are the shared decoder's (decoder.h).
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/errors.h"
#include "trainer/models/decoder.h"

namespace lmforge::trainer {

using json = nlohmann::json;

const Family& llama_family();

namespace {

// ------------------------------------------------------------------------------ HF config.json

// Which layers slide: v5's layer_types, else qwen2's max_window_layers (layers from it on), else all.
void read_sliding_window(const HfConfigJson& j, const std::string& model_type, ModelConfig& c) {
  bool windowed = model_type == "qwen2" ? j.boolean("use_sliding_window", false) : j.has("sliding_window");
  if (!windowed || !j.has("sliding_window")) return;
  c.sliding_window = j.integer("sliding_window");
  if (j.has("layer_types")) {
    read_layer_types(j, c);
  } else if (model_type == "qwen2") {
    int64_t first = j.integer("max_window_layers", 28);  // Qwen2Config's default
    for (int64_t i = 0; i < c.n_layers; ++i) c.layer_types.push_back(i >= first ? "sliding_attention" : "full_attention");
  }
}

ModelConfig read_llama_family(const HfConfigJson& j, const std::string& model_type) {
  ModelConfig c;
  c.arch = "llama";
  read_decoder_sizes(j, c);
  c.activation = j.string("hidden_act", "silu");
  if (c.activation != "silu" && c.activation != "gelu" && c.activation != "relu")
    throw j.error("hidden_act", "'" + c.activation + "' is not supported (silu, gelu, relu are)");
  read_hf_rope(j, c);
  if (model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
  } else if (model_type == "llama") {
    c.qkv_bias = c.o_bias = j.boolean("attention_bias", false);
    c.mlp_bias = j.boolean("mlp_bias", false);
  }
  read_sliding_window(j, model_type, c);
  return c;
}

std::string llama_model_type(const ModelConfig& c) {
  if (c.qkv_bias && !c.o_bias && !c.mlp_bias) return "qwen2";
  if (c.sliding_window > 0 && !c.qkv_bias && !c.o_bias && !c.mlp_bias) return "mistral";
  return "llama";
}


void write_llama_config(const ModelConfig& c, const std::string& type, json& j) {
  j["architectures"] = {type == "qwen2" ? "Qwen2ForCausalLM" : type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"};
  write_decoder_sizes(c, j);
  j["hidden_act"] = c.activation.empty() ? "silu" : c.activation;
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
}

// ------------------------------------------------------------------------------ GGUF

// llama.cpp's names for the llama body: blk.N.attn_q ... as its converter writes them.
std::string llama_gguf_tensor(const std::string& name, bool tied) {
  static const std::vector<std::pair<std::string, std::string>> layer_parts = {
      {"self_attn.q_proj.", "attn_q."},   {"self_attn.k_proj.", "attn_k."},   {"self_attn.v_proj.", "attn_v."},
      {"self_attn.o_proj.", "attn_output."}, {"mlp.gate_proj.", "ffn_gate."}, {"mlp.up_proj.", "ffn_up."},
      {"mlp.down_proj.", "ffn_down."},    {"input_layernorm.", "attn_norm."}, {"post_attention_layernorm.", "ffn_norm."}};
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return tied ? "" : "output.weight";
  const std::string layers = "model.layers.";
  if (name.compare(0, layers.size(), layers) == 0) {
    size_t dot = name.find('.', layers.size());
    std::string index = name.substr(layers.size(), dot - layers.size()), rest = name.substr(dot + 1);
    for (const auto& [hf, gguf] : layer_parts)
      if (rest.compare(0, hf.size(), hf) == 0) return "blk." + index + "." + gguf + rest.substr(hf.size());
  }
  throw std::logic_error("llama family: no GGUF name for parameter " + name);
}

// llama.cpp runs mistral as "llama" (interleaved RoPE: Q/K rows permuted) and qwen2 as "qwen2"
// (NeoX RoPE, HF's layout as it is), the way its converter writes them.
GgufLayout llama_gguf(const ModelConfig& c) {
  std::string act = c.activation.empty() ? "silu" : c.activation;
  if (act != "silu") throw InputError("hidden_act " + act + ": llama.cpp's llama and qwen2 architectures use silu");
  if (c.rope.type != "default" && c.rope.type != "linear")
    throw InputError("rope_scaling " + c.rope.type + ": not written to GGUF yet (default and linear are)");
  std::string type = llama_model_type(c);
  GgufLayout g;
  g.arch = type == "qwen2" ? "qwen2" : "llama";
  g.hparams = {{"context_length", c.max_seq_len},
               {"embedding_length", c.hidden_size},
               {"block_count", c.n_layers},
               {"feed_forward_length", c.ffn_size()},
               {"attention.head_count", c.n_heads},
               {"attention.head_count_kv", c.kv_heads()},
               {"attention.key_length", c.head_dim()},
               {"attention.value_length", c.head_dim()},
               {"rope.dimension_count", c.head_dim()},
               {"rope.freq_base", c.rope_theta},
               {"attention.layer_norm_rms_epsilon", c.norm_eps},
               {"vocab_size", c.vocab_size}};
  if (c.rope.type == "linear") {
    g.hparams["rope.scaling.type"] = "linear";
    g.hparams["rope.scaling.factor"] = c.rope.factor;
  }
  if (c.sliding_window > 0)
    g.notes.push_back("llama.cpp's " + g.arch + " attends to the whole context, not a sliding window of " +
                      std::to_string(c.sliding_window) + ": outputs agree up to that many tokens");
  bool tied = c.tie_embeddings;
  g.tensor_name = [tied](const std::string& name) { return llama_gguf_tensor(name, tied); };
  if (g.arch == "llama") {
    int64_t heads = c.n_heads, kv_heads = c.kv_heads();
    g.rope_permute_heads = [heads, kv_heads](const std::string& name) -> int64_t {
      if (name.find(".q_proj.") != std::string::npos) return heads;
      if (name.find(".k_proj.") != std::string::npos) return kv_heads;
      return 0;
    };
  }
  return g;
}

}  // namespace

const Family& llama_family() {
  static const Family family = [] {
    Family f;
    f.arch = "llama";
    f.hf_model_types = {"llama", "mistral", "qwen2"};
    f.hf_prefix = "model.";
    f.lora_targets = {"q_proj", "v_proj"};  // PEFT's default target_modules for llama
    f.residual_projections = {"o_proj", "down_proj"};
    f.norm_markers = {"norm"};
    f.build = [](const ModelConfig& c) { return make_decoder(c, llama_family()); };
    f.default_ffn_size = [](int64_t hidden) { return ((8 * hidden) / 3 + 63) / 64 * 64; };  // 8/3 x, up to 64
    f.check_config = check_decoder_config;
    f.read_hf_config = read_llama_family;
    f.hf_model_type = llama_model_type;
    f.write_hf_config = write_llama_config;
    f.tp_rule = [](const std::string& leaf) -> TpRule {
      for (const char* name : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head"})
        if (leaf == name) return {TpSplit::column, 1};
      for (const char* name : {"o_proj", "down_proj"})
        if (leaf == name) return {TpSplit::row, 1};
      return {};
    };
    f.gguf = llama_gguf;
    return f;
  }();
  return family;
}

}  // namespace lmforge::trainer
