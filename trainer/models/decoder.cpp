// trainer/models/decoder.cpp -- the shared RoPE decoder: grouped-query attention (fused or separate
// projections, QK-norm, partial rotary, soft-capping, sliding windows), the gated MLP, pre- or
// sandwich-normed layers, and the config.json keys families share. No family's names or choices here.
#include "trainer/models/decoder.h"

#include <cmath>

#include "core/config_reader.h"
#include "core/host_sync.h"
#include "trainer/models/attention.h"

namespace lmforge::trainer {

using json = nlohmann::json;

namespace {

// What every attention layer needs for one forward pass, computed once per pass.
struct AttentionInputs {
  RotaryAngles angles;
  RotaryAngles local_angles;      // sliding layers' own angles (rope_local_theta), or undefined
  torch::Tensor allowed;          // (B|1, 1, T, T) bool, or undefined: plain causal attention
  torch::Tensor allowed_window;   // the same within the sliding window (sliding layers only)
};

// Sliding layers see keys less than `window` positions back; HF's layer_types says which layers
// slide (all of them when it is absent).
int64_t window_of_layer(const ModelConfig& c, int64_t layer) {
  if (c.sliding_window <= 0) return 0;
  if (c.layer_types.empty()) return c.sliding_window;
  return c.layer_types[static_cast<size_t>(layer)] == "sliding_attention" ? c.sliding_window : 0;
}

struct DecoderAttentionImpl : LayerHost {
  DecoderAttentionImpl(const ModelConfig& c, const DecoderShape& shape, int64_t window)
      : head_dim(c.head_dim()), window(window), q_share(c.n_heads), kv_share(c.kv_heads()), softcap(c.attn_softcap) {
    int64_t q_width = c.n_heads * head_dim, kv_width = c.kv_heads() * head_dim;
    if (shape.fused_projections) {
      add_layer("qkv_proj", make_linear(c.hidden_size, q_width + 2 * kv_width, c.qkv_bias), qkv_proj);
    } else {
      add_layer("q_proj", make_linear(c.hidden_size, q_width, c.qkv_bias), q_proj);
      add_layer("k_proj", make_linear(c.hidden_size, kv_width, c.qkv_bias), k_proj);
      add_layer("v_proj", make_linear(c.hidden_size, kv_width, c.qkv_bias), v_proj);
    }
    add_layer("o_proj", make_linear(q_width, c.hidden_size, c.o_bias), o_proj);
    if (shape.qk_norm) {
      q_norm = register_module("q_norm", RMSNorm(head_dim, c.norm_eps, shape.norm_plus_one));
      k_norm = register_module("k_norm", RMSNorm(head_dim, c.norm_eps, shape.norm_plus_one));
    }
    // Scores are q k^T / sqrt(head_dim) in attention.h; a query_scale replaces that divisor.
    if (c.query_scale > 0) q_factor = std::sqrt(static_cast<double>(head_dim) / c.query_scale);
  }
  // x (B, T, C); with a cache, attends to the cached prefix as well. Head counts come from the
  // projections' widths, so a layer holding a slice of the heads runs unchanged.
  torch::Tensor forward(const torch::Tensor& x, const AttentionInputs& in, KVCache* cache = nullptr,
                        size_t layer = 0) {
    int64_t b = x.size(0), t = x.size(1);
    torch::Tensor q, k, v;  // (B, T, width)
    if (qkv_proj) {  // [q | k | v] in the proportion of their heads, on a tp rank as on one device
      auto qkv = qkv_proj->forward(x);
      int64_t q_width = qkv.size(-1) * q_share / (q_share + 2 * kv_share), kv_width = (qkv.size(-1) - q_width) / 2;
      q = qkv.narrow(-1, 0, q_width);
      k = qkv.narrow(-1, q_width, kv_width);
      v = qkv.narrow(-1, q_width + kv_width, kv_width);
    } else {
      q = q_proj->forward(x);
      k = k_proj->forward(x);
      v = v_proj->forward(x);
    }
    q = q.reshape({b, t, -1, head_dim});  // (B, T, H, D)
    k = k.reshape({b, t, -1, head_dim});  // (B, T, Hkv, D)
    if (q_norm) {  // over each head's D dimensions, before RoPE
      q = q_norm(q);
      k = k_norm(k);
    }
    q = q.transpose(1, 2);  // (B, H, T, D)
    k = k.transpose(1, 2);  // (B, Hkv, T, D)
    v = v.reshape({b, t, -1, head_dim}).transpose(1, 2);
    int64_t n_heads = q.size(1), n_kv_heads = k.size(1);
    const RotaryAngles& angles = window > 0 && in.local_angles.cos.defined() ? in.local_angles : in.angles;
    q = rotate(q, angles);
    k = rotate(k, angles);
    if (q_factor != 1.0) q = q * q_factor;
    torch::Tensor y;  // (B, H, T, D)
    if (cache) {
      y = cached_attention(q, k, v, *cache, layer, window, softcap);
    } else {
      if (n_kv_heads != n_heads) {  // each kv head serves n_heads / n_kv_heads consecutive q heads
        k = k.repeat_interleave(n_heads / n_kv_heads, 1);
        v = v.repeat_interleave(n_heads / n_kv_heads, 1);
      }
      y = causal_attention(q, k, v, window > 0 ? in.allowed_window : in.allowed, softcap);
    }
    return o_proj->forward(y.transpose(1, 2).reshape({b, t, n_heads * head_dim}));
  }
  int64_t head_dim, window, q_share, kv_share;  // shares: heads of q and of k (or v) in a fused qkv
  double softcap, q_factor = 1.0;
  Layer qkv_proj, q_proj, k_proj, v_proj, o_proj;
  RMSNorm q_norm{nullptr}, k_norm{nullptr};
};
TORCH_MODULE(DecoderAttention);

struct DecoderMLPImpl : LayerHost {
  DecoderMLPImpl(const ModelConfig& c, const DecoderShape& shape) : act(c.activation.empty() ? "silu" : c.activation) {
    if (shape.fused_projections) {
      add_layer("gate_up_proj", make_linear(c.hidden_size, 2 * c.ffn_size(), c.mlp_bias), gate_up_proj);
    } else {
      add_layer("gate_proj", make_linear(c.hidden_size, c.ffn_size(), c.mlp_bias), gate_proj);
      add_layer("up_proj", make_linear(c.hidden_size, c.ffn_size(), c.mlp_bias), up_proj);
    }
    add_layer("down_proj", make_linear(c.ffn_size(), c.hidden_size, c.mlp_bias), down_proj);
  }
  torch::Tensor forward(const torch::Tensor& x) {  // gated: (B, T, C) -> (B, T, F) -> (B, T, C)
    if (gate_up_proj) {
      auto halves = gate_up_proj->forward(x).chunk(2, -1);  // [gate | up]
      return down_proj->forward(activate(act, halves[0]) * halves[1]);
    }
    return down_proj->forward(activate(act, gate_proj->forward(x)) * up_proj->forward(x));
  }
  std::string act;
  Layer gate_up_proj, gate_proj, up_proj, down_proj;
};
TORCH_MODULE(DecoderMLP);

// Pre-norm: x + attn(norm(x)), then x + mlp(norm(x)). Sandwich (gemma): each sublayer's output is
// normed too, and the names follow: post_attention_layernorm is the attention's output norm there.
struct DecoderLayerImpl : torch::nn::Module {
  DecoderLayerImpl(const ModelConfig& c, const DecoderShape& shape, int64_t index) {
    self_attn = register_module("self_attn", DecoderAttention(c, shape, window_of_layer(c, index)));
    mlp = register_module("mlp", DecoderMLP(c, shape));
    auto norm = [&](const char* name) { return register_module(name, RMSNorm(c.hidden_size, c.norm_eps, shape.norm_plus_one)); };
    input_layernorm = norm("input_layernorm");
    post_attention_layernorm = norm("post_attention_layernorm");
    if (shape.sandwich_norms) {
      pre_feedforward_layernorm = norm("pre_feedforward_layernorm");
      post_feedforward_layernorm = norm("post_feedforward_layernorm");
    }
  }
  torch::Tensor forward(torch::Tensor x, const AttentionInputs& in, KVCache* cache = nullptr,
                        size_t layer = 0) {  // (B, T, C)
    if (pre_feedforward_layernorm) {
      x = x + post_attention_layernorm(self_attn->forward(input_layernorm(x), in, cache, layer));
      return x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)));
    }
    x = x + self_attn->forward(input_layernorm(x), in, cache, layer);
    return x + mlp(post_attention_layernorm(x));
  }
  DecoderAttention self_attn{nullptr};
  DecoderMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  RMSNorm pre_feedforward_layernorm{nullptr}, post_feedforward_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

struct DecoderModelImpl : LayerHost {
  DecoderModelImpl(const ModelConfig& c, const DecoderShape& shape) {
    add_layer("embed_tokens", std::make_shared<TokenEmbeddingImpl>(c.vocab_size, c.hidden_size), embed_tokens);
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layers; ++i) layers->push_back(DecoderLayer(c, shape, i));
    norm = register_module("norm", RMSNorm(c.hidden_size, c.norm_eps, shape.norm_plus_one));
    if (shape.embed_scale) embed_factor = std::sqrt(static_cast<double>(c.hidden_size));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const AttentionInputs& in, KVCache* cache = nullptr) {
    auto x = embed_tokens->forward(tokens);  // (B, T) -> (B, T, C)
    if (embed_factor != 1.0) x = x * embed_factor;
    for (size_t i = 0; i < layers->size(); ++i) x = layers[i]->as<DecoderLayer>()->forward(x, in, cache, i);
    return norm(x);
  }
  Layer embed_tokens;
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  double embed_factor = 1.0;
};
TORCH_MODULE(DecoderModel);

class DecoderForCausalLM : public CausalLMImpl {
 public:
  DecoderForCausalLM(const ModelConfig& c, const Family& family) : CausalLMImpl(family), cfg_(c) {
    model = register_module("model", DecoderModel(c, family.decoder));
    add_layer("lm_head", make_head(c.hidden_size, c.vocab_size, c.tie_embeddings, model->embed_tokens), lm_head);
    if (!rope_varies_with_length(c)) {  // a buffer: it moves with the model, no host copy per forward
      fixed_rope_ = rope_frequencies(c, c.max_seq_len);
      fixed_rope_.inv_freq = register_buffer("rope_inv_freq", fixed_rope_.inv_freq);
    }
    if (c.rope_local_theta > 0) {
      local_rope_ = default_rope(c.rotary_dim(), c.rope_local_theta);
      local_rope_.inv_freq = register_buffer("rope_local_inv_freq", local_rope_.inv_freq);
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
    return head(model->forward(tokens, in));
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
    auto logits = head(model->forward(tokens, in, &cache));
    cache.length = total;
    return logits;
  }
  DecoderModel model{nullptr};
  Layer lm_head;

 private:
  torch::Tensor head(const torch::Tensor& h) {  // (B, T, C) -> (B, T, V), soft-capped when set
    auto logits = lm_head->forward(h);
    return cfg_.final_softcap > 0 ? torch::tanh(logits / cfg_.final_softcap) * cfg_.final_softcap : logits;
  }
  // pos (B, T), whose largest value is `length` - 1 (or any below rope_constant_length);
  // allowed (B, 1, T, T) or undefined.
  AttentionInputs attention_inputs(const torch::Tensor& pos, int64_t length, torch::Tensor allowed) const {
    auto rope = fixed_rope_.inv_freq.defined() ? fixed_rope_ : rope_frequencies(cfg_, length);
    AttentionInputs in{rotary_angles(pos, rope), {}, allowed, {}};
    if (local_rope_.inv_freq.defined()) in.local_angles = rotary_angles(pos, local_rope_);
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
  RopeFrequencies local_rope_;  // sliding layers' own, when rope_local_theta is set
};

}  // namespace

CausalLM make_decoder(const ModelConfig& c, const Family& family) {
  return std::make_shared<DecoderForCausalLM>(c, family);
}

// ------------------------------------------------------------------------------ HF config.json

void read_decoder_sizes(const HfConfigJson& j, ModelConfig& c, int64_t head_dim, bool tied) {
  c.vocab_size = j.integer("vocab_size");
  c.hidden_size = j.integer("hidden_size");
  c.n_layers = j.integer("num_hidden_layers");
  c.n_heads = j.integer("num_attention_heads");
  c.n_kv_heads = j.integer("num_key_value_heads", c.n_heads);
  c.intermediate_size = j.integer("intermediate_size");
  c.max_seq_len = j.integer("max_position_embeddings", 2048);
  c.norm_eps = j.number("rms_norm_eps", 1e-6);
  c.tie_embeddings = j.boolean("tie_word_embeddings", tied);
  c.head_size = j.integer("head_dim", head_dim > 0 ? head_dim : c.hidden_size / c.n_heads);
  if (!j.has("head_dim") && head_dim <= 0 && c.hidden_size % c.n_heads != 0)
    throw j.error("hidden_size", std::to_string(c.hidden_size) + " is not divisible by num_attention_heads " +
                                     std::to_string(c.n_heads) + " and head_dim is not given");
  if (c.n_heads % c.n_kv_heads != 0)
    throw j.error("num_key_value_heads", "num_attention_heads " + std::to_string(c.n_heads) +
                                             " is not a multiple of " + std::to_string(c.n_kv_heads));
  if (c.head_dim() % 2 != 0) throw j.error("head_dim", "RoPE needs an even head dimension");
}

void read_layer_types(const HfConfigJson& j, ModelConfig& c) {
  const json& types = j.raw("layer_types");
  bool ok = types.is_array() && static_cast<int64_t>(types.size()) == c.n_layers;
  for (const json& t : types.is_array() ? types : json::array())
    ok = ok && (t == "sliding_attention" || t == "full_attention");
  if (!ok)
    throw j.error("layer_types", "expected " + std::to_string(c.n_layers) +
                                     " entries of \"sliding_attention\" or \"full_attention\", got " + types.dump());
  c.layer_types.clear();
  for (const json& t : types) c.layer_types.push_back(t.get<std::string>());
}

void read_attention_scaling(const HfConfigJson& j, ModelConfig& c, double query_scale, double attn_softcap,
                            double final_softcap) {
  auto read = [&](const char* key, double fallback) { return j.present(key) ? j.number(key, 0.0) : fallback; };
  c.query_scale = read("query_pre_attn_scalar", query_scale);
  c.attn_softcap = read("attn_logit_softcapping", attn_softcap);
  c.final_softcap = read("final_logit_softcapping", final_softcap);
}

void reject_keys(const HfConfigJson& j, const std::string& model_type, const std::vector<std::string>& keys) {
  for (const auto& key : keys)
    if (j.has(key) && j.raw(key) != false)
      throw j.error(key, j.raw(key).dump() + " is not supported for model_type " + model_type +
                             " (lmforge does not implement it there; null or false is)");
}

void write_decoder_sizes(const ModelConfig& c, json& j) {
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.ffn_size();
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.kv_heads();
  j["head_dim"] = c.head_dim();
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = c.norm_eps;
  write_hf_rope(c, j);
  if (!c.layer_types.empty()) j["layer_types"] = c.layer_types;
}

void write_attention_scaling(const ModelConfig& c, json& j) {
  j["query_pre_attn_scalar"] = c.query_scale > 0 ? c.query_scale : static_cast<double>(c.head_dim());
  j["attn_logit_softcapping"] = c.attn_softcap > 0 ? json(c.attn_softcap) : json(nullptr);
  j["final_logit_softcapping"] = c.final_softcap > 0 ? json(c.final_softcap) : json(nullptr);
}

void check_decoder_config(config::Section& s, const ModelConfig& c) {
  if (c.head_dim() % 2 != 0) s.error("hidden_size", "RoPE needs an even head dimension, got " + std::to_string(c.head_dim()));
}

TpRule decoder_tp_rule(const std::string& leaf) {
  if (leaf == "qkv_proj") return {TpSplit::column, 3};  // grouped-query layouts are refused by tp_layout_errors
  if (leaf == "gate_up_proj") return {TpSplit::column, 2};
  if (leaf == "q_norm" || leaf == "k_norm") return {TpSplit::heads, 1};  // over the rank's own heads
  for (const char* name : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head"})
    if (leaf == name) return {TpSplit::column, 1};
  for (const char* name : {"o_proj", "down_proj"})
    if (leaf == name) return {TpSplit::row, 1};
  return {};
}

}  // namespace lmforge::trainer
