// trainer/models/qwen3.cpp -- the qwen3 family: llama's decoder with an RMSNorm on each query and
// key head before RoPE (q_norm, k_norm), its config.json keys and what it registers. No other family here.
#include <algorithm>

#include "trainer/models/decoder.h"

namespace lmforge::trainer {

using json = nlohmann::json;

const Family& qwen3_family();

namespace {

constexpr int64_t kQwen3HeadDim = 128;  // Qwen3Config's head_dim when config.json leaves it out

ModelConfig read_qwen3(const HfConfigJson& j, const std::string& model_type) {
  ModelConfig c;
  c.arch = "qwen3";
  read_decoder_sizes(j, c, kQwen3HeadDim);
  c.activation = j.string("hidden_act", "silu");
  if (c.activation != "silu") throw j.error("hidden_act", "'" + c.activation + "' is not supported (silu is)");
  read_hf_rope(j, c);
  c.qkv_bias = c.o_bias = j.boolean("attention_bias", false);  // all four projections, as Qwen3Attention
  reject_keys(j, model_type, {"attn_logit_softcapping", "final_logit_softcapping", "partial_rotary_factor"});
  // Sliding windows only with use_sliding_window: layer_types, else layers from max_window_layers on.
  if (j.boolean("use_sliding_window", false) && j.has("sliding_window")) {
    c.sliding_window = j.integer("sliding_window");
    if (j.has("layer_types")) {
      read_layer_types(j, c);
    } else {
      int64_t first = j.integer("max_window_layers", 28, 0);  // Qwen3Config's default
      for (int64_t i = 0; i < c.n_layers; ++i) c.layer_types.push_back(i >= first ? "sliding_attention" : "full_attention");
    }
  }
  return c;
}

void write_qwen3(const ModelConfig& c, const std::string&, json& j) {
  j["architectures"] = {"Qwen3ForCausalLM"};
  write_decoder_sizes(c, j);
  j["hidden_act"] = "silu";
  j["attention_bias"] = c.qkv_bias;
  j["use_sliding_window"] = c.sliding_window > 0;
  j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  // v4 reads max_window_layers: the first sliding layer (layer_types is v5's spelling)
  auto first = std::find(c.layer_types.begin(), c.layer_types.end(), "sliding_attention");
  j["max_window_layers"] = c.layer_types.empty() ? 0 : first - c.layer_types.begin();
}

}  // namespace

const Family& qwen3_family() {
  static const Family family = [] {
    Family f;
    f.arch = "qwen3";
    f.hf_model_types = {"qwen3"};
    f.hf_prefix = "model.";
    f.lora_targets = {"q_proj", "v_proj"};  // PEFT's default target_modules for qwen3
    f.residual_projections = {"o_proj", "down_proj"};
    f.norm_markers = {"norm"};
    f.decoder.qk_norm = true;
    f.build = [](const ModelConfig& c) { return make_decoder(c, qwen3_family()); };
    f.default_ffn_size = [](int64_t hidden) { return 3 * hidden; };  // Qwen3's checkpoints: 3 x, as 0.6B's 1024 -> 3072
    f.check_config = check_decoder_config;
    f.read_hf_config = read_qwen3;
    f.hf_model_type = [](const ModelConfig&) { return std::string("qwen3"); };
    f.write_hf_config = write_qwen3;
    f.tp_rule = decoder_tp_rule;
    return f;
  }();
  return family;
}

}  // namespace lmforge::trainer
