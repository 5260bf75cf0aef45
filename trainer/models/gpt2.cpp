// trainer/models/gpt2.cpp -- the gpt2 family: LayerNorm, learned positions, GELU, biases, fused
// q/k/v (Conv1D in HF files), and everything it registers (family.h). No other family here.
#include "core/config_reader.h"
#include "core/errors.h"
#include "core/files.h"
#include "trainer/models/attention.h"
#include "trainer/models/family.h"
#include "trainer/models/hf_config.h"

namespace lmforge::trainer {

using json = nlohmann::json;

const Family& gpt2_family();

namespace {

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
  explicit GPT2LMHeadModel(const ModelConfig& c) : CausalLMImpl(gpt2_family()), cfg_(c) {
    transformer = register_module("transformer", GPT2Model(c));
    add_layer("lm_head", make_head(c.hidden_size, c.vocab_size, c.tie_embeddings, transformer->wte), lm_head);
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

// ------------------------------------------------------------------------------ HF config.json

ModelConfig read_gpt2(const HfConfigJson& j, const std::string&) {
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
bool is_conv1d_weight(const std::string& name) {
  return (ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
                              ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight"));
}

void write_gpt2_config(const ModelConfig& c, const std::string&, json& j) {
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
}

}  // namespace

const Family& gpt2_family() {
  static const Family family = [] {
    Family f;
    f.arch = "gpt2";
    f.hf_model_types = {"gpt2"};
    f.hf_prefix = "transformer.";
    f.lora_targets = {"c_attn"};  // PEFT's default target_modules for gpt2
    f.residual_projections = {"c_proj"};
    f.norm_markers = {"ln_"};
    f.learned_positions = true;
    f.hf_conv1d = true;
    f.build = [](const ModelConfig& c) -> CausalLM { return std::make_shared<GPT2LMHeadModel>(c); };
    f.default_ffn_size = [](int64_t hidden) { return 4 * hidden; };
    f.check_config = [](config::Section& s, const ModelConfig& c) {
      if (c.n_kv_heads > 0 && c.n_kv_heads != c.n_heads)
        s.error("n_kv_heads", "gpt2 has no grouped-query attention: leave n_kv_heads unset");
    };
    f.read_hf_config = read_gpt2;
    f.hf_model_type = [](const ModelConfig&) { return std::string("gpt2"); };
    f.write_hf_config = write_gpt2_config;
    f.hf_transposed = is_conv1d_weight;
    f.tp_rule = [](const std::string& leaf) -> TpRule {
      if (leaf == "c_attn") return {TpSplit::column, 3};  // q, k and v thirds, each split by heads
      if (leaf == "c_fc" || leaf == "lm_head") return {TpSplit::column, 1};
      if (leaf == "c_proj") return {TpSplit::row, 1};
      return {};
    };
    return f;
  }();
  return family;
}

}  // namespace lmforge::trainer
