// trainer/model.h -- single-device decoder-only transformers: the llama and gpt2 families.
// Names follow Hugging Face so weights map one to one. No LoRA and no parallelism here.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lmforge::config {
class Section;
}

namespace lmforge::trainer {

// RoPE scaling as HF spells it (read only from config.json). Each field is used by the types named.
struct RopeScaling {
  std::string type = "default";  // default | linear | dynamic | yarn | longrope | llama3
  double factor = 1.0;           // linear, dynamic, yarn, llama3 (longrope: attention factor only)
  double low_freq_factor = 1.0;  // llama3
  double high_freq_factor = 4.0; // llama3
  int64_t original_max_positions = 0;  // llama3, yarn, longrope: context length before scaling
  double attention_factor = 0;   // yarn, longrope: scales cos and sin; 0: derived from factor as HF does
  double beta_fast = 32, beta_slow = 1;        // yarn: the ramp's ends in rotations (the paper's values)
  double mscale = 0, mscale_all_dim = 0;       // yarn: 0: unused
  bool truncate = true;                        // yarn: ramp ends rounded to whole dimensions
  std::vector<double> short_factor, long_factor;  // longrope: D/2 divisors each, long past original_max_positions
};

struct ModelConfig {
  std::string from;                // HF model directory: its config.json sets every key below, its weights
                                   // replace the random init (a relative path: from the working directory, as data paths)
  std::string arch;                // llama | gpt2 (required unless `from` is set)
  int64_t vocab_size = 258;        // the byte tokenizer's 256 bytes + bos + eos
  int64_t hidden_size = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 8;
  int64_t n_kv_heads = 0;          // 0: same as n_heads (no grouped-query attention)
  int64_t intermediate_size = 0;   // 0: family default (llama 8/3 x hidden rounded up to 64, gpt2 4 x)
  int64_t max_seq_len = 1024;      // rope table / learned positions length
  double rope_theta = 10000.0;     // llama RoPE base, as in the original Llama
  double norm_eps = 1e-5;
  bool tie_embeddings = false;     // lm_head shares the token embedding
  double init_std = 0.02;          // GPT-2 init; residual projections scaled by 1/sqrt(2 n_layers)

  // Set only from an HF config.json (not YAML keys): the variants the llama family spans.
  int64_t head_size = 0;           // 0: hidden_size / n_heads; HF `head_dim` when it differs
  bool qkv_bias = false;           // q/k/v projections have biases (qwen2, llama attention_bias)
  bool o_bias = false;             // o_proj has a bias (llama attention_bias)
  bool mlp_bias = false;           // gate/up/down projections have biases (llama mlp_bias)
  std::string activation;          // "": family default (llama silu, gpt2 gelu_new); gelu | relu
  RopeScaling rope;                            // HF rope_scaling / rope_parameters; type default: plain RoPE
  int64_t sliding_window = 0;                  // mistral/qwen2: a query sees the keys less than this many
                                               // positions back; 0: no window
  std::vector<std::string> layer_types;        // HF layer_types: "sliding_attention" | "full_attention" per
                                               // layer; empty: every layer uses sliding_window
  int64_t bos_token_id = -1;                   // -1: none; carried into a saved config.json
  std::vector<int64_t> eos_token_ids;          // generation stops on any of these

  int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int64_t head_dim() const { return head_size > 0 ? head_size : hidden_size / n_heads; }
  int64_t ffn_size() const;
};
void read_model_config(config::Section& s, ModelConfig& c);

// Keys and values of every layer for the positions already run: incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> keys, values;  // [layer] (B, Hkv, capacity, D), filled up to `length`;
                                            // allocated at the layer's first use with its own head
                                            // count (a tensor-parallel rank holds a share of them)
  torch::Tensor tokens;                     // (B, capacity) the ids run so far: a RoPE that varies with
                                            // the length re-runs them when its frequencies change
  int64_t length = 0;                       // positions already in the cache
  int64_t capacity = 0;                     // positions it can hold
};

// A layer the model calls with one tensor: the seam where LoRA (trainer/lora) and tensor
// parallelism (parallel/) put in their own versions without the model knowing of them.
class LayerImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual bool is_embedding() const { return false; }  // embeddings are not weight-decayed by default
};
using Layer = std::shared_ptr<LayerImpl>;

// y = x W^T + b: weight (out, in), bias (out) or undefined. Parameter names as torch::nn::Linear.
class DenseLinearImpl : public LayerImpl {
 public:
  DenseLinearImpl(int64_t in_features, int64_t out_features, bool bias);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in) -> (..., out)
  torch::Tensor weight, bias;
};

// Token ids (B, T) -> rows of weight (V, C): (B, T, C).
class TokenEmbeddingImpl : public LayerImpl {
 public:
  TokenEmbeddingImpl(int64_t vocab_size, int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids) override;
  bool is_embedding() const override { return true; }
  torch::Tensor weight;
};

// The output head of a model with tied embeddings: logits = h E^T with the embedding's weight,
// which it holds but does not register (the embedding owns the parameter).
class TiedHeadImpl : public LayerImpl {
 public:
  explicit TiedHeadImpl(torch::Tensor embedding_weight) : weight(std::move(embedding_weight)) {}
  torch::Tensor forward(const torch::Tensor& h) override;  // (B, T, C) -> (B, T, V)
  torch::Tensor weight;
};

// A module whose replaceable layers sit in `Layer` members registered with add_layer, so that
// replace_layer can swap both the registered child and the member the forward pass calls.
class LayerHost : public torch::nn::Module {
 public:
  void replace(const std::string& name, Layer layer);

 protected:
  void add_layer(const std::string& name, Layer layer, Layer& member);

 private:
  std::map<std::string, Layer*> members_;
};

// Every replaceable layer with its qualified name ("model.layers.0.self_attn.q_proj"), in module order.
std::vector<std::pair<std::string, Layer>> named_layers(torch::nn::Module& root);
// Puts `layer` at `path` (a name from named_layers). Throws std::invalid_argument for any other path.
void replace_layer(torch::nn::Module& root, const std::string& path, Layer layer);

// Every family implements this: token ids in, next-token logits out.
class CausalLMImpl : public LayerHost {
 public:
  // tokens (B, T) int64; position_ids (B, T) or undefined for 0..T-1; segments (B, T) document
  // index per token, or undefined: with it, tokens attend only within their own document.
  // -> logits (B, T, V)
  virtual torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& position_ids = {},
                                const torch::Tensor& segments = {}) = 0;
  // An empty cache for `batch` sequences of up to `capacity` positions, on the model's device/dtype.
  virtual KVCache make_cache(int64_t batch, int64_t capacity) const = 0;
  // tokens (B, T) at positions cache.length .. cache.length + T - 1, attending to the cached prefix;
  // appends their keys/values and advances cache.length. -> logits (B, T, V). Inference only.
  virtual torch::Tensor forward_cached(const torch::Tensor& tokens, KVCache& cache) = 0;
  int64_t num_parameters() const;
};
using CausalLM = std::shared_ptr<CausalLMImpl>;

// Builds and initialises a model from the global torch seed (set it first for reproducibility).
// With cfg.from set, the weights are then loaded from that HF directory (trainer/hf_model.h).
CausalLM build_model(const ModelConfig& cfg);

// Mean next-token cross-entropy in fp32; targets equal to -100 are ignored.
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& targets);

// Llama's rotary embedding in the Hugging Face rotate-half layout.
// x (B, H, T, D), position_ids (B, T) -> (B, H, T, D)
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& position_ids, double theta);

struct RopeFrequencies {
  torch::Tensor inv_freq;         // (D/2) fp32
  double attention_factor = 1.0;  // multiplies cos and sin
};
// cfg's RoPE for a forward pass whose positions reach `length` - 1. Only dynamic and longrope
// depend on `length` (rope_varies_with_length); the others ignore it. When they change during
// cached decoding the model re-runs the prefix, so cached and uncached outputs agree (HF's cache
// keeps keys rotated by the older frequencies instead).
RopeFrequencies rope_frequencies(const ModelConfig& cfg, int64_t length);
bool rope_varies_with_length(const ModelConfig& cfg);

}  // namespace lmforge::trainer
