// trainer/models/gemma2.cpp -- the gemma2 family: the decoder with scaled embeddings, (1 + w)
// RMSNorms before and after attention and MLP, GeGLU, query_pre_attn_scalar, soft-capped scores and
// logits, alternating sliding/global layers; its config.json keys and registration. No other family here.
#include "trainer/models/decoder.h"

namespace lmforge::trainer {

using json = nlohmann::json;

const Family& gemma2_family();

namespace {

constexpr int64_t kGemmaHeadDim = 256;  // Gemma2Config's head_dim and sliding_window when config.json
constexpr int64_t kGemmaWindow = 4096;  // leaves them out

ModelConfig read_gemma2(const HfConfigJson& j, const std::string& model_type) {
  ModelConfig c;
  c.arch = "gemma2";
  read_decoder_sizes(j, c, kGemmaHeadDim, /*tied=*/true);
  std::string act = j.string("hidden_activation", j.string("hidden_act", "gelu_pytorch_tanh"));
  if (act != "gelu_pytorch_tanh")
    throw j.error(j.has("hidden_activation") ? "hidden_activation" : "hidden_act",
                  "'" + act + "' is not supported (gelu_pytorch_tanh is)");
  c.activation = "gelu_new";  // the tanh approximation, under GPT-2's name for it
  read_hf_rope(j, c);
  read_attention_scaling(j, c, 256, 50, 30);  // Gemma2Config's defaults (null turns a cap off)
  c.qkv_bias = c.o_bias = j.boolean("attention_bias", false);
  reject_keys(j, model_type, {"partial_rotary_factor", "use_bidirectional_attention"});
  c.sliding_window = j.present("sliding_window") && !j.has("sliding_window") ? 0 : j.integer("sliding_window", kGemmaWindow);
  if (j.has("layer_types")) {
    read_layer_types(j, c);
  } else {  // Gemma2's pattern: even layers slide, odd ones attend globally
    for (int64_t i = 0; i < c.n_layers; ++i) c.layer_types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  }
  return c;
}

void write_gemma2(const ModelConfig& c, const std::string&, json& j) {
  j["architectures"] = {"Gemma2ForCausalLM"};
  write_decoder_sizes(c, j);
  write_attention_scaling(c, j);
  j["hidden_activation"] = "gelu_pytorch_tanh";
  j["attention_bias"] = c.qkv_bias;
  j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
}

}  // namespace

const Family& gemma2_family() {
  static const Family family = [] {
    Family f;
    f.arch = "gemma2";
    f.hf_model_types = {"gemma2"};
    f.hf_prefix = "model.";
    f.lora_targets = {"q_proj", "v_proj"};  // PEFT's default target_modules for gemma2
    f.residual_projections = {"o_proj", "down_proj"};
    f.norm_markers = {"norm"};
    f.decoder.norm_plus_one = f.decoder.sandwich_norms = f.decoder.embed_scale = true;
    f.build = [](const ModelConfig& c) {
      ModelConfig v = c;
      if (v.activation.empty()) v.activation = "gelu_new";  // a YAML-built gemma2 gates with GELU too
      return make_decoder(v, gemma2_family());
    };
    f.default_ffn_size = [](int64_t hidden) { return 4 * hidden; };  // Gemma 2 2B: 2304 -> 9216
    f.check_config = check_decoder_config;
    f.read_hf_config = read_gemma2;
    f.hf_model_type = [](const ModelConfig&) { return std::string("gemma2"); };
    f.write_hf_config = write_gemma2;
    f.tp_rule = decoder_tp_rule;
    return f;
  }();
  return family;
}

}  // namespace lmforge::trainer
