// trainer/models/model.h -- what every decoder-only model is: ModelConfig (the `model:` section),
// the CausalLM interface, the KV cache, build_model and the loss. The families live in their own files.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/models/layers.h"
#include "trainer/models/rope.h"

namespace lmforge::config {
class Section;
}

namespace lmforge::trainer {

struct Family;

struct ModelConfig {
  std::string from;                // HF model directory: its config.json sets every key below, its weights
                                   // replace the random init (a relative path: from the working directory, as data paths)
  std::string arch;                // a family's name (trainer/models/family.h; required unless `from` is set)
  int64_t vocab_size = 258;        // the byte tokenizer's 256 bytes + bos + eos
  int64_t hidden_size = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 8;
  int64_t n_kv_heads = 0;          // 0: same as n_heads (no grouped-query attention)
  int64_t intermediate_size = 0;   // 0: the family's default width for hidden_size
  int64_t max_seq_len = 1024;      // rope table / learned positions length
  double rope_theta = 10000.0;     // llama RoPE base, as in the original Llama
  double norm_eps = 1e-5;
  bool tie_embeddings = false;     // lm_head shares the token embedding
  double init_std = 0.02;          // GPT-2 init; residual projections scaled by 1/sqrt(2 n_layers)

  // Set only from an HF config.json (not YAML keys): the variants the RoPE decoder families span.
  int64_t head_size = 0;           // 0: hidden_size / n_heads; HF `head_dim` when it differs
  bool qkv_bias = false;           // q/k/v projections have biases (qwen2, llama attention_bias)
  bool o_bias = false;             // o_proj has a bias (llama attention_bias)
  bool mlp_bias = false;           // gate/up/down projections have biases (llama mlp_bias)
  std::string activation;          // "": the family's default; gelu | relu | silu | gelu_new
  RopeScaling rope;                            // HF rope_scaling / rope_parameters; type default: plain RoPE
  int64_t sliding_window = 0;                  // mistral/qwen2: a query sees the keys less than this many
                                               // positions back; 0: no window
  std::vector<std::string> layer_types;        // HF layer_types: "sliding_attention" | "full_attention" per
                                               // layer; empty: every layer uses sliding_window
  double partial_rotary = 1.0;                 // the share of each head's dimensions RoPE rotates (phi3's
                                               // partial_rotary_factor); the rest pass through unrotated
  double rope_local_theta = 0;                 // gemma3: sliding layers' RoPE base, unscaled; 0: rope_theta
  double query_scale = 0;                      // attention scores scale by query_scale^-1/2 (gemma's
                                               // query_pre_attn_scalar); 0: head_dim, as everywhere else
  double attn_softcap = 0;                     // gemma2: scores become cap * tanh(scores / cap); 0: none
  double final_softcap = 0;                    // gemma2: the same on the logits; 0: none
  int64_t bos_token_id = -1;                   // -1: none; carried into a saved config.json
  std::vector<int64_t> eos_token_ids;          // generation stops on any of these

  int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int64_t head_dim() const { return head_size > 0 ? head_size : hidden_size / n_heads; }
  int64_t rotary_dim() const { return static_cast<int64_t>(static_cast<double>(head_dim()) * partial_rotary); }
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

// Every family implements this: token ids in, next-token logits out.
class CausalLMImpl : public LayerHost {
 public:
  // tokens (B, T) int64; position_ids (B, T), each below T (0.. restarting per document), or
  // undefined for 0..T-1; segments (B, T) document
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
  const Family& family() const { return family_; }

 protected:
  explicit CausalLMImpl(const Family& family) : family_(family) {}

 private:
  const Family& family_;  // what it is: its HF names, tensor-parallel plan, LoRA defaults
};
using CausalLM = std::shared_ptr<CausalLMImpl>;

// Builds and initialises a model from the global torch seed (set it first for reproducibility).
// The family is cfg.arch's (family.h). With cfg.from set, the weights are then loaded from that
// HF directory (trainer/models/hf_model.h).
CausalLM build_model(const ModelConfig& cfg);

// Next-token cross-entropy in fp32; targets equal to -100 are ignored. The mean over the targets,
// or their sum (0 when there are none): the trainer divides sums by the global batch's count.
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& targets);
torch::Tensor causal_lm_loss_sum(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace lmforge::trainer
