// trainer/models/gemma3.cpp -- the gemma3 family (text): gemma2's decoder with (1 + w) QK-norm, no
// caps by default, one global layer in sliding_window_pattern, and local/global RoPE bases; its
// config.json keys and registration. No other family here; the multimodal gemma3 wrapper is not read.
#include "trainer/models/decoder.h"

namespace lmforge::trainer {

using json = nlohmann::json;

const Family& gemma3_family();

namespace {

// Gemma3TextConfig's values for the keys config.json may leave out.
constexpr int64_t kHeadDim = 256, kWindow = 4096, kPattern = 6;
constexpr double kRopeTheta = 1e6, kLocalTheta = 1e4, kQueryScale = 256;

// RoPE: v4's rope_theta and rope_scaling for global layers and rope_local_base_freq for sliding
// ones, or v5's rope_parameters holding one set per layer type.
void read_rope(const HfConfigJson& j, ModelConfig& c) {
  const json per_type = j.has("rope_parameters") ? j.raw("rope_parameters") : json();
  bool nested = false;  // v5's flat rope_parameters holds numbers and lists; per layer type, objects
  if (per_type.is_object())
    for (const auto& item : per_type.items()) nested = nested || item.value().is_object();
  if (!nested) {
    read_hf_rope(j, c);
    if (!j.has("rope_theta") && !j.has("rope_parameters")) c.rope_theta = kRopeTheta;
    c.rope_local_theta = j.number("rope_local_base_freq", kLocalTheta);
    return;
  }
  for (const auto& item : per_type.items())
    if (item.key() != "full_attention" && item.key() != "sliding_attention")
      throw j.error("rope_parameters." + item.key(), "not a layer type (full_attention, sliding_attention are)");
  read_hf_rope(j.with("rope_parameters", per_type.value("full_attention", json::object())), c);
  if (!per_type.contains("full_attention") || !per_type["full_attention"].contains("rope_theta")) c.rope_theta = kRopeTheta;
  const json local = per_type.value("sliding_attention", json::object());
  ModelConfig sliding = c;
  sliding.rope = RopeScaling();
  read_hf_rope(j.with("rope_parameters", local), sliding);
  if (sliding.rope.type != "default")  // lmforge's sliding layers turn by plain RoPE only
    throw j.error("rope_parameters.sliding_attention", "rope type '" + sliding.rope.type + "' is not supported (default is)");
  c.rope_local_theta = local.contains("rope_theta") ? sliding.rope_theta : kLocalTheta;
}

ModelConfig read_gemma3(const HfConfigJson& j, const std::string& model_type) {
  ModelConfig c;
  c.arch = "gemma3";
  read_decoder_sizes(j, c, kHeadDim, /*tied=*/true);
  c.max_seq_len = j.integer("max_position_embeddings", 131072);
  std::string act = j.string("hidden_activation", j.string("hidden_act", "gelu_pytorch_tanh"));
  if (act != "gelu_pytorch_tanh")
    throw j.error(j.has("hidden_activation") ? "hidden_activation" : "hidden_act",
                  "'" + act + "' is not supported (gelu_pytorch_tanh is)");
  c.activation = "gelu_new";  // the tanh approximation, under GPT-2's name for it
  read_rope(j, c);
  read_attention_scaling(j, c, kQueryScale, 0, 0);
  c.qkv_bias = c.o_bias = j.boolean("attention_bias", false);
  reject_keys(j, model_type, {"partial_rotary_factor", "use_bidirectional_attention"});
  c.sliding_window = j.present("sliding_window") && !j.has("sliding_window") ? 0 : j.integer("sliding_window", kWindow);
  if (j.has("layer_types")) {
    read_layer_types(j, c);
  } else {  // every pattern-th layer attends globally, the others slide
    int64_t pattern = j.integer("sliding_window_pattern", kPattern);
    for (int64_t i = 0; i < c.n_layers; ++i)
      c.layer_types.push_back((i + 1) % pattern == 0 ? "full_attention" : "sliding_attention");
  }
  return c;
}

void write_gemma3(const ModelConfig& c, const std::string&, json& j) {
  j["architectures"] = {"Gemma3ForCausalLM"};
  write_decoder_sizes(c, j);
  write_attention_scaling(c, j);
  j["hidden_activation"] = "gelu_pytorch_tanh";
  j["attention_bias"] = c.qkv_bias;
  j["rope_local_base_freq"] = c.rope_local_theta > 0 ? c.rope_local_theta : c.rope_theta;
  j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
}

}  // namespace

const Family& gemma3_family() {
  static const Family family = [] {
    Family f;
    f.arch = "gemma3";
    f.hf_model_types = {"gemma3_text"};
    f.hf_prefix = "model.";
    f.lora_targets = {"q_proj", "v_proj"};  // PEFT's default target_modules for gemma3_text
    f.residual_projections = {"o_proj", "down_proj"};
    f.norm_markers = {"norm"};
    f.decoder.qk_norm = f.decoder.norm_plus_one = f.decoder.sandwich_norms = f.decoder.embed_scale = true;
    f.build = [](const ModelConfig& c) {
      ModelConfig v = c;
      if (v.activation.empty()) v.activation = "gelu_new";  // a YAML-built gemma3 gates with GELU too
      return make_decoder(v, gemma3_family());
    };
    f.default_ffn_size = [](int64_t hidden) { return 4 * hidden; };  // Gemma 3 4B: 2560 -> 10240
    f.check_config = check_decoder_config;
    f.read_hf_config = read_gemma3;
    f.hf_model_type = [](const ModelConfig&) { return std::string("gemma3_text"); };
    f.write_hf_config = write_gemma3;
    f.tp_rule = decoder_tp_rule;
    return f;
  }();
  return family;
}

}  // namespace lmforge::trainer
