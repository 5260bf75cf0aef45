// trainer/model.cpp -- llama (RMSNorm, RoPE, SwiGLU, GQA) and gpt2 (LayerNorm, learned positions,
// GELU, biases) built from torch::nn parts, with a KV-cache path. HF files live in hf_model.cpp.
#include "trainer/model.h"

#include <cmath>

#include "core/config_reader.h"
#include "core/errors.h"
#include "core/files.h"
#include "trainer/hf_model.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;

int64_t ModelConfig::ffn_size() const {
  if (intermediate_size > 0) return intermediate_size;
  if (arch == "gpt2") return 4 * hidden_size;
  int64_t raw = (8 * hidden_size) / 3;
  return (raw + 63) / 64 * 64;
}

void read_model_config(config::Section& s, ModelConfig& c) {
  using config::at_least;
  s.field("from", c.from);
  ModelConfig from_dir;
  if (!c.from.empty()) {
    try {
      from_dir = read_hf_config(c.from);
    } catch (const InputError& e) {
      s.error("from", e.what());
      c.from.clear();
    }
    if (!c.from.empty()) {  // config.json supplies the defaults; YAML may only repeat them
      from_dir.from = c.from;
      from_dir.init_std = c.init_std;
      c = from_dir;
    }
  }
  s.field("arch", c.arch, {"llama", "gpt2"}, c.from.empty() ? config::Need::required : config::Need::optional);
  s.field("vocab_size", c.vocab_size, at_least(1));
  s.field("hidden_size", c.hidden_size, at_least(1));
  s.field("n_layers", c.n_layers, at_least(1));
  s.field("n_heads", c.n_heads, at_least(1));
  s.field("n_kv_heads", c.n_kv_heads, at_least(0));
  s.field("intermediate_size", c.intermediate_size, at_least(0));
  s.field("max_seq_len", c.max_seq_len, at_least(1));
  s.field("rope_theta", c.rope_theta, config::greater_than(0));
  s.field("norm_eps", c.norm_eps, config::greater_than(0));
  s.field("tie_embeddings", c.tie_embeddings);
  s.field("init_std", c.init_std, config::greater_than(0));
  if (!c.from.empty()) {
    auto conflict = [&](const std::string& key, bool differs, const std::string& theirs) {
      if (differs)
        s.error(key, "conflicts with " + c.from + "/config.json (" + theirs + "); drop the key or model.from");
    };
    auto near = [](double a, double b) { return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b)); };
    conflict("arch", c.arch != from_dir.arch, from_dir.arch);
    conflict("vocab_size", c.vocab_size != from_dir.vocab_size, std::to_string(from_dir.vocab_size));
    conflict("hidden_size", c.hidden_size != from_dir.hidden_size, std::to_string(from_dir.hidden_size));
    conflict("n_layers", c.n_layers != from_dir.n_layers, std::to_string(from_dir.n_layers));
    conflict("n_heads", c.n_heads != from_dir.n_heads, std::to_string(from_dir.n_heads));
    conflict("n_kv_heads", c.kv_heads() != from_dir.kv_heads(), std::to_string(from_dir.kv_heads()));
    conflict("intermediate_size", c.ffn_size() != from_dir.ffn_size(), std::to_string(from_dir.ffn_size()));
    conflict("max_seq_len", c.arch == "gpt2" && c.max_seq_len != from_dir.max_seq_len,
             std::to_string(from_dir.max_seq_len) + " learned positions");
    conflict("rope_theta", !near(c.rope_theta, from_dir.rope_theta), std::to_string(from_dir.rope_theta));
    conflict("norm_eps", !near(c.norm_eps, from_dir.norm_eps), std::to_string(from_dir.norm_eps));
    conflict("tie_embeddings", c.tie_embeddings != from_dir.tie_embeddings, from_dir.tie_embeddings ? "true" : "false");
    return;
  }
  if (c.hidden_size % c.n_heads != 0)
    s.error("n_heads", "hidden_size " + std::to_string(c.hidden_size) + " is not divisible by n_heads " +
                           std::to_string(c.n_heads));
  if (c.kv_heads() > c.n_heads || c.n_heads % c.kv_heads() != 0)
    s.error("n_kv_heads", "n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                              std::to_string(c.kv_heads()));
  if (c.arch == "gpt2" && c.n_kv_heads > 0 && c.n_kv_heads != c.n_heads)
    s.error("n_kv_heads", "gpt2 has no grouped-query attention: leave n_kv_heads unset");
  if (c.arch == "llama" && c.head_dim() % 2 != 0)
    s.error("hidden_size", "RoPE needs an even head dimension, got " + std::to_string(c.head_dim()));
}

int64_t CausalLMImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto flat = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat);  // (B*T, V)
  return F::cross_entropy(flat, targets.reshape({-1}), F::CrossEntropyFuncOptions().ignore_index(-100));
}

static torch::Tensor default_positions(const torch::Tensor& tokens) {
  auto t = torch::arange(tokens.size(1), tokens.options());
  return t.unsqueeze(0).expand({tokens.size(0), tokens.size(1)});  // (B, T)
}

// Positions offset .. offset + T - 1 for every row of tokens (B, T).
static torch::Tensor positions_from(const torch::Tensor& tokens, int64_t offset) {
  auto t = torch::arange(offset, offset + tokens.size(1), tokens.options().dtype(torch::kLong));
  return t.unsqueeze(0).expand({tokens.size(0), tokens.size(1)});  // (B, T)
}

static torch::Tensor rotate_half(const torch::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return torch::cat({-halves[1], halves[0]}, -1);
}

static torch::Tensor default_inv_freq(int64_t d, double theta) {  // theta^(-2i/d), i < d/2, in fp32
  return torch::pow(theta, -torch::arange(0, d, 2, torch::kDouble) / static_cast<double>(d)).to(torch::kFloat);
}

constexpr double kPi = 3.14159265358979323846;

namespace {

// Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a linear blend in between.
torch::Tensor llama3_inv_freq(const torch::Tensor& inv_freq, const RopeScaling& r) {
  double old_len = static_cast<double>(r.original_max_positions);
  double low_wavelen = old_len / r.low_freq_factor, high_wavelen = old_len / r.high_freq_factor;
  auto wavelen = 2 * kPi / inv_freq;
  auto scaled = torch::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
  auto smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  auto blended = (1 - smooth) * scaled / r.factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, blended, scaled);
}

// YaRN: dimensions that turn fewer than beta_slow times over the original context are
// interpolated (divided by factor), those turning more than beta_fast times are kept, with a
// linear ramp between; cos and sin are scaled by 0.1 ln(factor) + 1 unless given.
RopeFrequencies yarn(const ModelConfig& c, const RopeScaling& r) {
  int64_t d = c.head_dim();
  double base = c.rope_theta, original = static_cast<double>(r.original_max_positions);
  auto dim_of = [&](double rotations) {  // the dimension index that turns `rotations` times
    return d * std::log(original / (rotations * 2 * kPi)) / (2 * std::log(base));
  };
  double low = dim_of(r.beta_fast), high = dim_of(r.beta_slow);
  if (r.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(d - 1));
  if (low == high) high += 0.001;  // a one-point ramp would divide by zero
  auto ramp = ((torch::arange(d / 2, torch::kDouble) - low) / (high - low)).clamp(0, 1);
  auto keep = 1 - ramp;  // 1: extrapolate (the original frequency), 0: interpolate
  auto inv_freq = default_inv_freq(d, base).to(torch::kDouble);
  auto mixed = inv_freq / r.factor * (1 - keep) + inv_freq * keep;
  auto mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  double attention = r.attention_factor;
  if (attention <= 0)
    attention = r.mscale > 0 && r.mscale_all_dim > 0 ? mscale(r.factor, r.mscale) / mscale(r.factor, r.mscale_all_dim)
                                                     : mscale(r.factor, 1.0);
  return {mixed.to(torch::kFloat), attention};
}

// LongRoPE: per-dimension divisors, the long set once the sequence outgrows the original context.
RopeFrequencies longrope(const ModelConfig& c, const RopeScaling& r, int64_t length) {
  const auto& divisors = length > r.original_max_positions ? r.long_factor : r.short_factor;
  auto inv_freq = default_inv_freq(c.head_dim(), c.rope_theta).to(torch::kDouble) /
                  torch::tensor(divisors, torch::kDouble);
  double attention = r.attention_factor;
  if (attention <= 0)
    attention = r.factor <= 1 ? 1.0
                              : std::sqrt(1 + std::log(r.factor) / std::log(static_cast<double>(r.original_max_positions)));
  return {inv_freq.to(torch::kFloat), attention};
}

}  // namespace

bool rope_varies_with_length(const ModelConfig& c) { return c.rope.type == "dynamic" || c.rope.type == "longrope"; }

RopeFrequencies rope_frequencies(const ModelConfig& c, int64_t length) {
  const RopeScaling& r = c.rope;
  int64_t d = c.head_dim();
  auto inv_freq = default_inv_freq(d, c.rope_theta);  // (D/2)
  if (r.type == "linear") return {inv_freq / r.factor, 1.0};
  if (r.type == "llama3") return {llama3_inv_freq(inv_freq, r).to(torch::kFloat), 1.0};
  if (r.type == "yarn") return yarn(c, r);
  if (r.type == "longrope") return longrope(c, r, length);
  if (r.type == "dynamic") {  // NTK-aware: the base grows with the length past max_seq_len
    double ratio = static_cast<double>(std::max(length, c.max_seq_len)) / static_cast<double>(c.max_seq_len);
    double base = c.rope_theta * std::pow(r.factor * ratio - (r.factor - 1), static_cast<double>(d) / (d - 2));
    return {default_inv_freq(d, base), 1.0};
  }
  return {inv_freq, 1.0};
}

// cos and sin (B, 1, T, D) of positions (B, T), scaled by the attention factor.
struct RotaryAngles {
  torch::Tensor cos, sin;
};
static RotaryAngles rotary_angles(const torch::Tensor& position_ids, const RopeFrequencies& rope) {
  auto freqs = position_ids.to(torch::kFloat).unsqueeze(-1) * rope.inv_freq.to(position_ids.device());  // (B, T, D/2)
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // (B, 1, T, D)
  return {emb.cos() * rope.attention_factor, emb.sin() * rope.attention_factor};
}

static torch::Tensor rotate(const torch::Tensor& x, const RotaryAngles& a) {  // x (B, H, T, D)
  return x * a.cos.to(x.dtype()) + rotate_half(x) * a.sin.to(x.dtype());
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& position_ids, double theta) {
  return rotate(x, rotary_angles(position_ids, {default_inv_freq(x.size(-1), theta), 1.0}));
}

// Causal attention over (B, H, T, D) with k/v already expanded to H heads. `allowed` (B, 1, T, T)
// bool, when defined, replaces the causal mask (packed documents that must not see each other).
static torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      const torch::Tensor& allowed = {}) {
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  if (allowed.defined()) return at::scaled_dot_product_attention(q, k, v, allowed, 0.0, /*is_causal=*/false);
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
  int64_t t = q.size(2);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  auto hidden = allowed.defined() ? allowed.logical_not()
                                  : torch::ones({t, t}, torch::dtype(torch::kBool).device(q.device())).triu(1);
  scores = scores.masked_fill(hidden, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1).to(v.dtype()), v);  // (B, H, T, D)
#endif
}

// (T, L) bool: query i, at position past + i, sees key j when j <= past + i and, with a window,
// past + i - j < window.
static torch::Tensor visible_keys(int64_t t, int64_t past, int64_t window, const torch::Device& device) {
  auto query = torch::arange(past, past + t, torch::dtype(torch::kLong).device(device)).unsqueeze(1);  // (T, 1)
  auto key = torch::arange(past + t, torch::dtype(torch::kLong).device(device)).unsqueeze(0);           // (1, L)
  auto visible = key <= query;
  return window > 0 ? visible.logical_and(query - key < window) : visible;
}

// Appends k, v (B, Hkv, T, D) to layer `layer` of the cache at cache.length and attends q
// (B, H, T, D), at positions cache.length.., to every cached key up to its own position (and
// within `window` of it, when positive). Grouped heads are matched by reshaping q, so cached
// keys are never expanded. -> (B, H, T, D)
static torch::Tensor cached_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      KVCache& cache, size_t layer, int64_t window = 0) {
  int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3), hkv = k.size(1);
  int64_t past = cache.length, total = past + t;
  TORCH_CHECK(total <= cache.capacity, "KV cache holds ", cache.capacity, " positions; ", total, " needed");
  if (!cache.keys[layer].defined()) {  // first use: as many heads as this layer's k has
    cache.keys[layer] = torch::zeros({b, hkv, cache.capacity, d}, k.options());
    cache.values[layer] = torch::zeros({b, hkv, cache.capacity, d}, v.options());
  }
  cache.keys[layer].narrow(2, past, t).copy_(k);
  cache.values[layer].narrow(2, past, t).copy_(v);
  auto keys = cache.keys[layer].narrow(2, 0, total);      // (B, Hkv, L, D)
  auto values = cache.values[layer].narrow(2, 0, total);  // (B, Hkv, L, D)
  auto qg = q.reshape({b, hkv, (h / hkv) * t, d});         // (B, Hkv, G*T, D): q head = kv head * G + g
  auto scores = torch::matmul(qg, keys.transpose(-2, -1)) / std::sqrt(static_cast<double>(d));  // (B, Hkv, G*T, L)
  if (t > 1 || (window > 0 && total > window)) {
    auto hidden = visible_keys(t, past, window, q.device()).logical_not();  // (T, L)
    scores = scores.view({b, hkv, h / hkv, t, total})
                 .masked_fill(hidden, -std::numeric_limits<float>::infinity())
                 .view({b, hkv, (h / hkv) * t, total});
  }
  auto y = torch::matmul(torch::softmax(scores, -1).to(values.dtype()), values);  // (B, Hkv, G*T, D)
  return y.view({b, h, t, d});
}

static KVCache empty_cache(const torch::nn::Module& model, int64_t layers, int64_t batch, int64_t capacity) {
  KVCache cache;
  cache.keys.resize(static_cast<size_t>(layers));
  cache.values.resize(static_cast<size_t>(layers));
  cache.capacity = capacity;
  cache.tokens = torch::zeros({batch, capacity}, torch::dtype(torch::kLong).device(model.parameters().front().device()));
  return cache;
}

static Layer make_linear(int64_t in, int64_t out, bool bias) {
  return std::make_shared<DenseLinearImpl>(in, out, bias);
}

static torch::Tensor activate(const std::string& name, const torch::Tensor& x) {
  if (name == "relu") return torch::relu(x);
  if (name == "gelu") return torch::gelu(x);
  if (name == "silu") return F::silu(x);
  return torch::gelu(x, "tanh");  // GPT-2's "gelu_new" is the tanh approximation
}

// ----------------------------------------------------------------------- replaceable layers

DenseLinearImpl::DenseLinearImpl(int64_t in_features, int64_t out_features, bool has_bias) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor DenseLinearImpl::forward(const torch::Tensor& x) { return F::linear(x, weight, bias); }

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab_size, int64_t dim) {
  weight = register_parameter("weight", torch::empty({vocab_size, dim}));
}

torch::Tensor TokenEmbeddingImpl::forward(const torch::Tensor& ids) { return F::embedding(ids, weight); }

torch::Tensor TiedHeadImpl::forward(const torch::Tensor& h) { return F::linear(h, weight); }

void LayerHost::add_layer(const std::string& name, Layer layer, Layer& member) {
  member = register_module(name, std::move(layer));
  members_[name] = &member;
}

void LayerHost::replace(const std::string& name, Layer layer) {
  auto it = members_.find(name);
  if (it == members_.end()) throw std::invalid_argument("no replaceable layer named " + name);
  *it->second = replace_module(name, std::move(layer));
}

std::vector<std::pair<std::string, Layer>> named_layers(torch::nn::Module& root) {
  std::vector<std::pair<std::string, Layer>> out;
  for (const auto& item : root.named_modules()) {
    if (auto layer = std::dynamic_pointer_cast<LayerImpl>(item.value())) out.emplace_back(item.key(), layer);
  }
  return out;
}

void replace_layer(torch::nn::Module& root, const std::string& path, Layer layer) {
  auto dot = path.rfind('.');
  std::string parent_path = dot == std::string::npos ? "" : path.substr(0, dot);
  std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
  std::shared_ptr<torch::nn::Module> parent;
  if (parent_path.empty()) {
    if (auto* host = dynamic_cast<LayerHost*>(&root)) return host->replace(name, std::move(layer));
  } else {
    for (const auto& item : root.named_modules()) {
      if (item.key() == parent_path) parent = item.value();
    }
  }
  auto host = std::dynamic_pointer_cast<LayerHost>(parent);
  if (!host) throw std::invalid_argument("no replaceable layer named " + path);
  host->replace(name, std::move(layer));
}

// segments (B, T) -> (B, 1, T, T) bool: query i sees key j when j <= i in the same segment;
// undefined segments give undefined (plain causal attention).
static torch::Tensor allowed_attention(const torch::Tensor& segments) {
  if (!segments.defined()) return {};
  int64_t t = segments.size(1);
  auto causal = torch::ones({t, t}, torch::dtype(torch::kBool).device(segments.device())).tril();
  return (segments.unsqueeze(2) == segments.unsqueeze(1)).logical_and(causal).unsqueeze(1);
}

// The output head: its own linear, or the token embedding's weight when tied.
static Layer head_layer(const ModelConfig& c, const Layer& embedding) {
  if (c.tie_embeddings) return std::make_shared<TiedHeadImpl>(embedding->named_parameters(false)["weight"]);
  return make_linear(c.hidden_size, c.vocab_size, false);
}

// ------------------------------------------------------------------------------------ llama

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps) : eps(eps) { weight = register_parameter("weight", torch::ones({dim})); }
  torch::Tensor forward(const torch::Tensor& x) {  // (..., C), normalised in fp32
    auto xf = x.to(torch::kFloat);
    auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return weight * normed.to(x.dtype());
  }
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

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
  explicit LlamaForCausalLM(const ModelConfig& c) : cfg_(c) {
    model = register_module("model", LlamaModel(c));
    add_layer("lm_head", head_layer(c, model->embed_tokens), lm_head);
    if (!rope_varies_with_length(c)) fixed_rope_ = rope_frequencies(c, c.max_seq_len);
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& position_ids,
                        const torch::Tensor& segments) override {
    auto pos = position_ids.defined() ? position_ids : default_positions(tokens);
    auto in = attention_inputs(pos, allowed_attention(segments));
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
    auto in = attention_inputs(positions_from(tokens, past), {});
    auto logits = lm_head->forward(model->forward(tokens, in, &cache));
    cache.length = total;
    return logits;
  }
  LlamaModel model{nullptr};
  Layer lm_head;

 private:
  // pos (B, T); allowed (B, 1, T, T) or undefined.
  AttentionInputs attention_inputs(const torch::Tensor& pos, torch::Tensor allowed) const {
    auto rope = fixed_rope_.inv_freq.defined() ? fixed_rope_ : rope_frequencies(cfg_, pos.max().item<int64_t>() + 1);
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

// ------------------------------------------------------------------------------------- gpt2

struct GPT2AttentionImpl : LayerHost {
  explicit GPT2AttentionImpl(const ModelConfig& c) : head_dim(c.head_dim()) {
    add_layer("c_attn", make_linear(c.hidden_size, 3 * c.hidden_size, true), c_attn);
    add_layer("c_proj", make_linear(c.hidden_size, c.hidden_size, true), c_proj);
  }
  // (B, T, C); the head count comes from c_attn's width (q, k, v thirds), as in llama's attention.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed, KVCache* cache = nullptr,
                        size_t layer = 0) {
    int64_t b = x.size(0), t = x.size(1);
    auto qkv = c_attn->forward(x).chunk(3, -1);  // 3 x (B, T, H*D)
    int64_t n_heads = qkv[0].size(-1) / head_dim;
    auto heads = [&](const torch::Tensor& z) { return z.view({b, t, n_heads, head_dim}).transpose(1, 2); };
    auto y = cache ? cached_attention(heads(qkv[0]), heads(qkv[1]), heads(qkv[2]), *cache, layer)
                   : causal_attention(heads(qkv[0]), heads(qkv[1]), heads(qkv[2]), allowed);  // (B, H, T, D)
    return c_proj->forward(y.transpose(1, 2).reshape({b, t, n_heads * head_dim}));
  }
  int64_t head_dim;
  Layer c_attn, c_proj;
};
TORCH_MODULE(GPT2Attention);

struct GPT2MLPImpl : LayerHost {
  explicit GPT2MLPImpl(const ModelConfig& c) : act(c.activation.empty() ? "gelu_new" : c.activation) {
    add_layer("c_fc", make_linear(c.hidden_size, c.ffn_size(), true), c_fc);
    add_layer("c_proj", make_linear(c.ffn_size(), c.hidden_size, true), c_proj);
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (B, T, C) -> (B, T, F) -> (B, T, C)
    return c_proj->forward(activate(act, c_fc->forward(x)));
  }
  std::string act;
  Layer c_fc, c_proj;
};
TORCH_MODULE(GPT2MLP);

struct GPT2BlockImpl : torch::nn::Module {
  explicit GPT2BlockImpl(const ModelConfig& c) {
    auto ln = torch::nn::LayerNormOptions({c.hidden_size}).eps(c.norm_eps);
    ln_1 = register_module("ln_1", torch::nn::LayerNorm(ln));
    attn = register_module("attn", GPT2Attention(c));
    ln_2 = register_module("ln_2", torch::nn::LayerNorm(ln));
    mlp = register_module("mlp", GPT2MLP(c));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& allowed, KVCache* cache = nullptr,
                        size_t layer = 0) {  // (B, T, C)
    x = x + attn->forward(ln_1(x), allowed, cache, layer);
    return x + mlp(ln_2(x));
  }
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  GPT2Attention attn{nullptr};
  GPT2MLP mlp{nullptr};
};
TORCH_MODULE(GPT2Block);

struct GPT2ModelImpl : LayerHost {
  explicit GPT2ModelImpl(const ModelConfig& c) {
    add_layer("wte", std::make_shared<TokenEmbeddingImpl>(c.vocab_size, c.hidden_size), wte);
    wpe = register_module("wpe", torch::nn::Embedding(c.max_seq_len, c.hidden_size));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layers; ++i) h->push_back(GPT2Block(c));
    ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.norm_eps)));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& pos,
                        const torch::Tensor& allowed, KVCache* cache = nullptr) {  // (B, T) -> (B, T, C)
    auto x = wte->forward(tokens) + wpe(pos);
    for (size_t i = 0; i < h->size(); ++i) x = h[i]->as<GPT2Block>()->forward(x, allowed, cache, i);
    return ln_f(x);
  }
  Layer wte;
  torch::nn::Embedding wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(GPT2Model);

class GPT2LMHeadModel : public CausalLMImpl {
 public:
  explicit GPT2LMHeadModel(const ModelConfig& c) : cfg_(c) {
    transformer = register_module("transformer", GPT2Model(c));
    add_layer("lm_head", head_layer(c, transformer->wte), lm_head);
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& position_ids,
                        const torch::Tensor& segments) override {
    check_length(tokens.size(1));
    auto pos = position_ids.defined() ? position_ids : default_positions(tokens);
    return lm_head->forward(transformer->forward(tokens, pos, allowed_attention(segments)));
  }
  KVCache make_cache(int64_t batch, int64_t capacity) const override {
    return empty_cache(*this, cfg_.n_layers, batch, capacity);
  }
  torch::Tensor forward_cached(const torch::Tensor& tokens, KVCache& cache) override {
    check_length(cache.length + tokens.size(1));
    auto logits = lm_head->forward(transformer->forward(tokens, positions_from(tokens, cache.length), {}, &cache));
    cache.length += tokens.size(1);
    return logits;
  }
  GPT2Model transformer{nullptr};
  Layer lm_head;

 private:
  void check_length(int64_t t) const {
    TORCH_CHECK(t <= cfg_.max_seq_len, "sequence of ", t, " tokens is longer than model.max_seq_len ",
                cfg_.max_seq_len);
  }
  ModelConfig cfg_;
};

// ------------------------------------------------------------------------------------ build

static void init_weights(CausalLMImpl& model, const ModelConfig& c) {
  torch::NoGradGuard no_grad;
  double residual_std = c.init_std / std::sqrt(2.0 * c.n_layers);  // GPT-2: keeps the residual stream's variance flat
  for (const auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    auto p = item.value();
    bool is_norm = name.find("norm") != std::string::npos || name.find("ln_") != std::string::npos;
    if (is_norm && ends_with(name, ".weight")) {
      p.fill_(1.0);
    } else if (ends_with(name, ".bias")) {
      p.zero_();
    } else if (ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight") || ends_with(name, "c_proj.weight")) {
      p.normal_(0.0, residual_std);
    } else {
      p.normal_(0.0, c.init_std);
    }
  }
}

CausalLM build_model(const ModelConfig& cfg) {
  CausalLM model;
  if (cfg.arch == "gpt2") {
    model = std::make_shared<GPT2LMHeadModel>(cfg);
  } else {
    model = std::make_shared<LlamaForCausalLM>(cfg);
  }
  if (cfg.from.empty()) {
    init_weights(*model, cfg);
  } else {
    load_hf_weights(*model, cfg);  // strict: every parameter is overwritten, so no random init first
  }
  return model;
}

}  // namespace lmforge::trainer
