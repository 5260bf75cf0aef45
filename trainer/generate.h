// trainer/generate.h -- inference on a built model: per-token log-probabilities (scoring) and
// autoregressive generation (greedy, temperature, top-k, top-p; with or without the KV cache),
// plus opening a model directory (HF or lmforge run) for them. The CLI wiring is in launch/.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "trainer/models/model.h"

namespace lmforge::trainer {

struct SamplingConfig {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;   // 0: greedy (argmax); > 0 divides the logits before sampling
  int64_t top_k = 0;          // 0: no top-k filter
  double top_p = 1.0;         // 1: no nucleus filter; else the smallest set with mass >= top_p
  uint64_t seed = 0;          // sampling is reproducible for a given seed
  bool use_cache = true;      // false: recompute the whole prefix every step (the benchmark's baseline)
  std::vector<int64_t> stop_ids;  // generation ends after emitting any of these (kept in the output)
};

struct Generation {
  std::vector<int64_t> ids;   // the new tokens only
  std::string finish_reason;  // "eos" or "length"
};

// prompt: at least one id, each < vocab. Inference mode; the model's device and dtype.
Generation generate(CausalLMImpl& model, const std::vector<int64_t>& prompt, const SamplingConfig& s);

// The next token from next-token logits (V) under s (greedy when temperature is 0).
int64_t sample_next(const torch::Tensor& logits, const SamplingConfig& s, at::Generator& gen);

struct TokenScores {
  std::vector<double> logprobs;  // log p(ids[t] | ids[:t]) for t = 1 .. n-1
  double nll = 0;                // -sum(logprobs)
};
TokenScores score_tokens(CausalLMImpl& model, const std::vector<int64_t>& ids);

// Throws InputError when `positions` tokens do not fit cfg: GPT-2 has only its learned positions
// (RoPE models run past max_seq_len, as HF's do).
void check_sequence_length(const ModelConfig& cfg, int64_t positions, const std::string& what);

}  // namespace lmforge::trainer
