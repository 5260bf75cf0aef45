// trainer/model.cpp -- llama (RMSNorm, RoPE, SwiGLU, GQA) and gpt2 (LayerNorm, learned positions,
// GELU, biases) built from torch::nn parts. Loading HF weights lives elsewhere.
#include "trainer/model.h"

#include <cmath>

#include "trainer/config_reader.h"

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
  s.field("arch", c.arch, {"llama", "gpt2"}, config::Need::required);
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

static torch::Tensor rotate_half(const torch::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return torch::cat({-halves[1], halves[0]}, -1);
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& position_ids, double theta) {
  int64_t d = x.size(-1);
  auto inv_freq = torch::pow(theta, -torch::arange(0, d, 2, torch::kFloat) / static_cast<double>(d))
                      .to(x.device());                                          // (D/2)
  auto freqs = position_ids.to(torch::kFloat).unsqueeze(-1) * inv_freq;        // (B, T, D/2)
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);                       // (B, 1, T, D)
  return (x * emb.cos().to(x.dtype())) + (rotate_half(x) * emb.sin().to(x.dtype()));
}

// Causal attention over (B, H, T, D) with k/v already expanded to H heads.
static torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v) {
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
  int64_t t = q.size(2);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  auto future = torch::ones({t, t}, torch::dtype(torch::kBool).device(q.device())).triu(1);  // (T, T)
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1).to(v.dtype()), v);  // (B, H, T, D)
#endif
}

static torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
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

struct LlamaAttentionImpl : torch::nn::Module {
  explicit LlamaAttentionImpl(const ModelConfig& c)
      : n_heads(c.n_heads), n_kv_heads(c.kv_heads()), head_dim(c.head_dim()), theta(c.rope_theta) {
    q_proj = register_module("q_proj", make_linear(c.hidden_size, n_heads * head_dim, false));
    k_proj = register_module("k_proj", make_linear(c.hidden_size, n_kv_heads * head_dim, false));
    v_proj = register_module("v_proj", make_linear(c.hidden_size, n_kv_heads * head_dim, false));
    o_proj = register_module("o_proj", make_linear(n_heads * head_dim, c.hidden_size, false));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pos) {  // (B, T, C)
    int64_t b = x.size(0), t = x.size(1);
    auto q = q_proj(x).view({b, t, n_heads, head_dim}).transpose(1, 2);     // (B, H, T, D)
    auto k = k_proj(x).view({b, t, n_kv_heads, head_dim}).transpose(1, 2);  // (B, Hkv, T, D)
    auto v = v_proj(x).view({b, t, n_kv_heads, head_dim}).transpose(1, 2);
    q = apply_rope(q, pos, theta);
    k = apply_rope(k, pos, theta);
    if (n_kv_heads != n_heads) {  // each kv head serves n_heads / n_kv_heads consecutive q heads
      k = k.repeat_interleave(n_heads / n_kv_heads, 1);
      v = v.repeat_interleave(n_heads / n_kv_heads, 1);
    }
    auto y = causal_attention(q, k, v).transpose(1, 2).reshape({b, t, n_heads * head_dim});
    return o_proj(y);
  }
  int64_t n_heads, n_kv_heads, head_dim;
  double theta;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(LlamaAttention);

struct LlamaMLPImpl : torch::nn::Module {
  explicit LlamaMLPImpl(const ModelConfig& c) {
    gate_proj = register_module("gate_proj", make_linear(c.hidden_size, c.ffn_size(), false));
    up_proj = register_module("up_proj", make_linear(c.hidden_size, c.ffn_size(), false));
    down_proj = register_module("down_proj", make_linear(c.ffn_size(), c.hidden_size, false));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // SwiGLU: (B, T, C) -> (B, T, F) -> (B, T, C)
    return down_proj(F::silu(gate_proj(x)) * up_proj(x));
  }
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

struct LlamaDecoderLayerImpl : torch::nn::Module {
  explicit LlamaDecoderLayerImpl(const ModelConfig& c) {
    self_attn = register_module("self_attn", LlamaAttention(c));
    mlp = register_module("mlp", LlamaMLP(c));
    input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
    post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& pos) {  // (B, T, C), pre-norm residual
    x = x + self_attn(input_layernorm(x), pos);
    return x + mlp(post_attention_layernorm(x));
  }
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

struct LlamaModelImpl : torch::nn::Module {
  explicit LlamaModelImpl(const ModelConfig& c) {
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layers; ++i) layers->push_back(LlamaDecoderLayer(c));
    norm = register_module("norm", RMSNorm(c.hidden_size, c.norm_eps));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& pos) {  // (B, T) -> (B, T, C)
    auto x = embed_tokens(tokens);
    for (const auto& layer : *layers) x = layer->as<LlamaDecoderLayer>()->forward(x, pos);
    return norm(x);
  }
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLM : public CausalLMImpl {
 public:
  explicit LlamaForCausalLM(const ModelConfig& c) {
    model = register_module("model", LlamaModel(c));
    if (!c.tie_embeddings) lm_head = register_module("lm_head", make_linear(c.hidden_size, c.vocab_size, false));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& position_ids) override {
    auto pos = position_ids.defined() ? position_ids : default_positions(tokens);
    auto h = model->forward(tokens, pos);  // (B, T, C)
    return lm_head ? lm_head(h) : F::linear(h, model->embed_tokens->weight);  // (B, T, V)
  }
  LlamaModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};
};

// ------------------------------------------------------------------------------------- gpt2

struct GPT2AttentionImpl : torch::nn::Module {
  explicit GPT2AttentionImpl(const ModelConfig& c) : n_heads(c.n_heads), head_dim(c.head_dim()) {
    c_attn = register_module("c_attn", make_linear(c.hidden_size, 3 * c.hidden_size, true));
    c_proj = register_module("c_proj", make_linear(c.hidden_size, c.hidden_size, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (B, T, C)
    int64_t b = x.size(0), t = x.size(1);
    auto qkv = c_attn(x).split(n_heads * head_dim, -1);  // 3 x (B, T, C)
    auto heads = [&](const torch::Tensor& z) { return z.view({b, t, n_heads, head_dim}).transpose(1, 2); };
    auto y = causal_attention(heads(qkv[0]), heads(qkv[1]), heads(qkv[2]));  // (B, H, T, D)
    return c_proj(y.transpose(1, 2).reshape({b, t, n_heads * head_dim}));
  }
  int64_t n_heads, head_dim;
  torch::nn::Linear c_attn{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(GPT2Attention);

struct GPT2MLPImpl : torch::nn::Module {
  explicit GPT2MLPImpl(const ModelConfig& c) {
    c_fc = register_module("c_fc", make_linear(c.hidden_size, c.ffn_size(), true));
    c_proj = register_module("c_proj", make_linear(c.ffn_size(), c.hidden_size, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // GPT-2's "gelu_new" is the tanh approximation
    return c_proj(torch::gelu(c_fc(x), "tanh"));
  }
  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};
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
  torch::Tensor forward(torch::Tensor x) {  // (B, T, C)
    x = x + attn(ln_1(x));
    return x + mlp(ln_2(x));
  }
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  GPT2Attention attn{nullptr};
  GPT2MLP mlp{nullptr};
};
TORCH_MODULE(GPT2Block);

struct GPT2ModelImpl : torch::nn::Module {
  explicit GPT2ModelImpl(const ModelConfig& c) {
    wte = register_module("wte", torch::nn::Embedding(c.vocab_size, c.hidden_size));
    wpe = register_module("wpe", torch::nn::Embedding(c.max_seq_len, c.hidden_size));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layers; ++i) h->push_back(GPT2Block(c));
    ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.norm_eps)));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& pos) {  // (B, T) -> (B, T, C)
    auto x = wte(tokens) + wpe(pos);
    for (const auto& block : *h) x = block->as<GPT2Block>()->forward(x);
    return ln_f(x);
  }
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(GPT2Model);

class GPT2LMHeadModel : public CausalLMImpl {
 public:
  explicit GPT2LMHeadModel(const ModelConfig& c) : max_seq_len_(c.max_seq_len) {
    transformer = register_module("transformer", GPT2Model(c));
    if (!c.tie_embeddings) lm_head = register_module("lm_head", make_linear(c.hidden_size, c.vocab_size, false));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& position_ids) override {
    TORCH_CHECK(tokens.size(1) <= max_seq_len_, "sequence of ", tokens.size(1),
                " tokens is longer than model.max_seq_len ", max_seq_len_);
    auto pos = position_ids.defined() ? position_ids : default_positions(tokens);
    auto h = transformer->forward(tokens, pos);
    return lm_head ? lm_head(h) : F::linear(h, transformer->wte->weight);  // (B, T, V)
  }
  GPT2Model transformer{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  int64_t max_seq_len_;
};

// ------------------------------------------------------------------------------------ build

static void init_weights(CausalLMImpl& model, const ModelConfig& c) {
  torch::NoGradGuard no_grad;
  double residual_std = c.init_std / std::sqrt(2.0 * c.n_layers);  // GPT-2: keeps the residual stream's variance flat
  for (const auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    auto p = item.value();
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    bool is_norm = name.find("norm") != std::string::npos || name.find("ln_") != std::string::npos;
    if (is_norm && ends_with(".weight")) {
      p.fill_(1.0);
    } else if (ends_with(".bias")) {
      p.zero_();
    } else if (ends_with("o_proj.weight") || ends_with("down_proj.weight") || ends_with("c_proj.weight")) {
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
  init_weights(*model, cfg);
  return model;
}

}  // namespace lmforge::trainer
