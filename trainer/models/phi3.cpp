// trainer/models/phi3.cpp -- the phi3 family: llama's decoder with one fused qkv_proj and one
// gate_up_proj, partial rotary and longrope, its config.json keys and what it registers. No other family here.
#include "trainer/models/decoder.h"

namespace lmforge::trainer {

using json = nlohmann::json;

const Family& phi3_family();

namespace {

ModelConfig read_phi3(const HfConfigJson& j, const std::string& model_type) {
  ModelConfig c;
  c.arch = "phi3";
  read_decoder_sizes(j, c);
  c.activation = j.string("hidden_act", "silu");
  if (c.activation != "silu") throw j.error("hidden_act", "'" + c.activation + "' is not supported (silu is)");
  c.partial_rotary = j.number("partial_rotary_factor", 1.0);
  if (c.partial_rotary > 1.0 || c.rotary_dim() < 2 || c.rotary_dim() % 2 != 0)
    throw j.error("partial_rotary_factor", "head_dim " + std::to_string(c.head_dim()) + " x " + j.raw("partial_rotary_factor").dump() +
                                               " must be an even number of dimensions, at most head_dim");
  read_hf_rope(j, c);
  reject_keys(j, model_type, {"attention_bias", "mlp_bias", "attn_logit_softcapping", "final_logit_softcapping"});
  if (j.has("sliding_window")) c.sliding_window = j.integer("sliding_window");  // every layer, as mistral
  return c;
}

void write_phi3(const ModelConfig& c, const std::string&, json& j) {
  j["architectures"] = {"Phi3ForCausalLM"};
  write_decoder_sizes(c, j);
  j["hidden_act"] = "silu";
  j["partial_rotary_factor"] = c.partial_rotary;
  j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  if (c.rope.type == "longrope") j["original_max_position_embeddings"] = c.rope.original_max_positions;  // v4 reads it here
}

}  // namespace

const Family& phi3_family() {
  static const Family family = [] {
    Family f;
    f.arch = "phi3";
    f.hf_model_types = {"phi3"};
    f.hf_prefix = "model.";
    f.lora_targets = {"qkv_proj"};  // PEFT's default target_modules for phi3: the fused projection
    f.residual_projections = {"o_proj", "down_proj"};
    f.norm_markers = {"norm"};
    f.decoder.fused_projections = true;
    f.build = [](const ModelConfig& c) { return make_decoder(c, phi3_family()); };
    f.default_ffn_size = [](int64_t hidden) { return ((8 * hidden) / 3 + 63) / 64 * 64; };  // llama's 8/3 x, up to 64
    f.check_config = check_decoder_config;
    f.read_hf_config = read_phi3;
    f.hf_model_type = [](const ModelConfig&) { return std::string("phi3"); };
    f.write_hf_config = write_phi3;
    f.tp_rule = decoder_tp_rule;
    return f;
  }();
  return family;
}

}  // namespace lmforge::trainer
