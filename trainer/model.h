// trainer/model.h -- single-device decoder-only transformers: the llama and gpt2 families.
// Names follow Hugging Face so weights map one to one. No LoRA and no parallelism here.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

namespace lmforge::config {
class Section;
}

namespace lmforge::trainer {

struct ModelConfig {
  std::string arch;                // llama | gpt2 (required)
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

  int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int64_t head_dim() const { return hidden_size / n_heads; }
  int64_t ffn_size() const;
};
void read_model_config(config::Section& s, ModelConfig& c);

// Every family implements this: token ids in, next-token logits out.
class CausalLMImpl : public torch::nn::Module {
 public:
  // tokens (B, T) int64; position_ids (B, T) or undefined for 0..T-1 -> logits (B, T, V)
  virtual torch::Tensor forward(const torch::Tensor& tokens,
                                const torch::Tensor& position_ids = {}) = 0;
  int64_t num_parameters() const;
};
using CausalLM = std::shared_ptr<CausalLMImpl>;

// Builds and initialises a model from the global torch seed (set it first for reproducibility).
CausalLM build_model(const ModelConfig& cfg);

// Mean next-token cross-entropy in fp32; targets equal to -100 are ignored.
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& targets);

// Llama's rotary embedding in the Hugging Face rotate-half layout.
// x (B, H, T, D), position_ids (B, T) -> (B, H, T, D)
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& position_ids, double theta);

}  // namespace lmforge::trainer
