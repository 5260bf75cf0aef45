// trainer/models/llama.cpp -- the llama family (llama, mistral, qwen2): RMSNorm, RoPE, SwiGLU,
// grouped-query attention, sliding windows, and everything it registers (family.h). No other family here.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/config_reader.h"
#include "core/errors.h"
#include "core/host_sync.h"
#include "trainer/models/attention.h"
#include "trainer/models/family.h"
#include "trainer/models/hf_config.h"

namespace lmforge::trainer {

using json = nlohmann::json;

const Family& llama_family();

namespace {

// What every attention layer needs for one forward pass, computed once per pass.
struct AttentionInputs {
  RotaryAngles angles;
  torch::Tensor allowed;          // (B|1, 1, T, T) bool, or undefined: plain causal attention
  torch::Tensor allowed_window;   // the same within the sliding window (sliding layers only)
};

// Sliding layers see keys less than `window` positions back; HF's layer_types says which layers
// slide (all of them when it is absent).
static int64_t window_of_layer(const ModelConfig& c, int64_t layer) {
  if (c.sliding_window <= 0) return 0;
  if (c.layer_types.empty()) return c.sliding_window;
  return c.layer_types[static_cast<size_t>(layer)] == "sliding_attention" ? c.sliding_window : 0;
}

struct LlamaAttentionImpl : LayerHost {
  LlamaAttentionImpl(const ModelConfig& c, int64_t window) : head_dim(c.head_dim()), window(window) {
    add_layer("q_proj", make_linear(c.hidden_size, c.n_heads * head_dim, c.qkv_bias), q_proj);
    add_layer("k_proj", make_linear(c.hidden_size, c.kv_heads() * head_dim, c.qkv_bias), k_proj);
    add_layer("v_proj", make_linear(c.hidden_size, c.kv_heads() * head_dim, c.qkv_bias), v_proj);
    add_layer("o_proj", make_linear(c.n_heads * head_dim, c.hidden_size, c.o_bias), o_proj);
  }
  // x (B, T, C); with a cache, attends to the cached prefix as well. Head counts come from the
  // projections' widths, so a layer holding a slice of the heads runs unchanged.
  torch::Tensor forward(const torch::Tensor& x, const AttentionInputs& in, KVCache* cache = nullptr,
                        size_t layer = 0) {
    int64_t b = x.size(0), t = x.size(1);
    auto q = q_proj->forward(x).view({b, t, -1, head_dim}).transpose(1, 2);  // (B, H, T, D)
    auto k = k_proj->forward(x).view({b, t, -1, head_dim}).transpose(1, 2);  // (B, Hkv, T, D)
    auto v = v_proj->forward(x).view({b, t, -1, head_dim}).transpose(1, 2);
    int64_t n_heads = q.size(1), n_kv_heads = k.size(1);
    q = rotate(q, in.angles);
    k = rotate(k, in.angles);
    torch::Tensor y;  // (B, H, T, D)
    if (cache) {
      y = cached_attention(q, k, v, *cache, layer, window);
    } else {
      if (n_kv_heads != n_heads) {  // each kv head serves n_heads / n_kv_heads consecutive q heads
        k = k.repeat_interleave(n_heads / n_kv_heads, 1);
        v = v.repeat_interleave(n_heads / n_kv_heads, 1);
      }
      y = causal_attention(q, k, v, window > 0 ? in.allowed_window : in.allowed);
    }
    return o_proj->forward(y.transpose(1, 2).reshape({b, t, n_heads * head_dim}));
  }
  int64_t head_dim, window;
  Layer q_proj, k_proj, v_proj, o_proj;
};
TORCH_MODULE(LlamaAttention);

struct LlamaMLPImpl : LayerHost {
  explicit LlamaMLPImpl(const ModelConfig& c) : act(c.activation.empty() ? "silu" : c.activation) {
    add_layer("gate_proj", make_linear(c.hidden_size, c.ffn_size(), c.mlp_bias), gate_proj);
    add_layer("up_proj", make_linear(c.hidden_size, c.ffn_size(), c.mlp_bias), up_proj);
    add_layer("down_proj", make_linear(c.ffn_size(), c.hidden_size, c.mlp_bias), down_proj);
  }
  torch::Tensor forward(const torch::Tensor& x) {  // SwiGLU: (B, T, C) -> (B, T, F) -> (B, T, C)
    return down_proj->forward(activate(act, gate_proj->forward(x)) * up_proj->forward(x));
  }
  std::string act;
  Layer gate_proj, up_proj, down_proj;
};
TORCH_MODULE(LlamaMLP);

struct LlamaDecoderLayerImpl : torch::nn::Module {
  LlamaDecoderLayerImpl(const ModelConfig& c, int64_t index) {
    self_attn = register_module("self_attn", LlamaAttention(c, window_of_layer(c, index)));
    mlp = register_module("mlp", LlamaMLP(c));
    input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
    post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
  }
  torch::Tensor forward(torch::Tensor x, const AttentionInputs& in, KVCache* cache = nullptr,
                        size_t layer = 0) {  // (B, T, C), pre-norm residual
    x = x + self_attn->forward(input_layernorm(x), in, cache, layer);
    return x + mlp(post_attention_layernorm(x));
  }
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

struct LlamaModelImpl : LayerHost {
  explicit LlamaModelImpl(const ModelConfig& c) {
    add_layer("embed_tokens", std::make_shared<TokenEmbeddingImpl>(c.vocab_size, c.hidden_size), embed_tokens);
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layers; ++i) layers->push_back(LlamaDecoderLayer(c, i));
    norm = register_module("norm", RMSNorm(c.hidden_size, c.norm_eps));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const AttentionInputs& in, KVCache* cache = nullptr) {
    auto x = embed_tokens->forward(tokens);  // (B, T) -> (B, T, C)
    for (size_t i = 0; i < layers->size(); ++i) x = layers[i]->as<LlamaDecoderLayer>()->forward(x, in, cache, i);
    return norm(x);
  }
  Layer embed_tokens;
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLM : public CausalLMImpl {
 public:
  explicit LlamaForCausalLM(const ModelConfig& c) : CausalLMImpl(llama_family()), cfg_(c) {
    model = register_module("model", LlamaModel(c));
    add_layer("lm_head", make_head(c.hidden_size, c.vocab_size, c.tie_embeddings, model->embed_tokens), lm_head);
    if (!rope_varies_with_length(c)) {  // a buffer: it moves with the model, no host copy per forward
      fixed_rope_ = rope_frequencies(c, c.max_seq_len);
      fixed_rope_.inv_freq = register_buffer("rope_inv_freq", fixed_rope_.inv_freq);
    }
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& position_ids,
                        const torch::Tensor& segments) override {
    auto pos = position_ids.defined() ? position_ids : default_positions(tokens);
    // Positions are below T, and up to rope_constant_length the frequencies do not depend on the
    // largest one: it is read from the device only past that (dynamic/longrope on long rows).
    const int64_t t = tokens.size(1);
    int64_t length = t <= rope_constant_length(cfg_) ? t : read_to_host(pos.max()).item<int64_t>() + 1;
    auto in = attention_inputs(pos, length, allowed_attention(segments));
    return lm_head->forward(model->forward(tokens, in));
  }
  KVCache make_cache(int64_t batch, int64_t capacity) const override {
    return empty_cache(*this, cfg_.n_layers, batch, capacity);
  }
  torch::Tensor forward_cached(const torch::Tensor& tokens, KVCache& cache) override {
    int64_t past = cache.length, t = tokens.size(1), total = past + t;
    if (past > 0 && rope_varies_with_length(cfg_) &&
        !rope_frequencies(cfg_, total).inv_freq.equal(rope_frequencies(cfg_, past).inv_freq)) {
      // The frequencies changed with the length: the cached keys are stale, so run the prefix again
      // and the result equals a forward pass over the whole sequence.
      auto all = torch::cat({cache.tokens.narrow(1, 0, past), tokens}, 1);  // (B, past + T)
      cache.length = 0;
      return forward_cached(all, cache).narrow(1, past, t);
    }
    cache.tokens.narrow(1, past, t).copy_(tokens);
    auto in = attention_inputs(positions_from(tokens, past), total, {});
    auto logits = lm_head->forward(model->forward(tokens, in, &cache));
    cache.length = total;
    return logits;
  }
  LlamaModel model{nullptr};
  Layer lm_head;

 private:
  // pos (B, T), whose largest value is `length` - 1 (or any below rope_constant_length);
  // allowed (B, 1, T, T) or undefined.
  AttentionInputs attention_inputs(const torch::Tensor& pos, int64_t length, torch::Tensor allowed) const {
    auto rope = fixed_rope_.inv_freq.defined() ? fixed_rope_ : rope_frequencies(cfg_, length);
    AttentionInputs in{rotary_angles(pos, rope), allowed, {}};
    if (cfg_.sliding_window > 0 && pos.size(1) > cfg_.sliding_window) {
      auto window = visible_keys(pos.size(1), 0, cfg_.sliding_window, pos.device()).view({1, 1, pos.size(1), -1});
      in.allowed_window = allowed.defined() ? allowed.logical_and(window) : window;
    } else {
      in.allowed_window = allowed;  // a window longer than the sequence changes nothing
    }
    return in;
  }
  ModelConfig cfg_;
  RopeFrequencies fixed_rope_;  // set unless the frequencies vary with the length
};

// ------------------------------------------------------------------------------ HF config.json

// Which layers slide: v5's layer_types, else qwen2's max_window_layers (layers from it on), else all.
void read_sliding_window(const HfConfigJson& j, const std::string& model_type, ModelConfig& c) {
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

ModelConfig read_llama_family(const HfConfigJson& j, const std::string& model_type) {
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
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.ffn_size();
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.kv_heads();
  j["head_dim"] = c.head_dim();
  j["hidden_act"] = c.activation.empty() ? "silu" : c.activation;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = c.norm_eps;
  write_hf_rope(c, j);
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
    f.build = [](const ModelConfig& c) -> CausalLM { return std::make_shared<LlamaForCausalLM>(c); };
    f.default_ffn_size = [](int64_t hidden) { return ((8 * hidden) / 3 + 63) / 64 * 64; };  // 8/3 x, up to 64
    f.check_config = [](config::Section& s, const ModelConfig& c) {
      if (c.head_dim() % 2 != 0)
        s.error("hidden_size", "RoPE needs an even head dimension, got " + std::to_string(c.head_dim()));
    };
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
