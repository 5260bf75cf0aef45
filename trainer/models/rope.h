// trainer/models/rope.h -- rotary position embeddings: HF's scalings (linear, dynamic, yarn,
// longrope, llama3), the angles of a forward pass, and their config.json spelling. No attention here.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lmforge::trainer {

struct ModelConfig;
class HfConfigJson;

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
// The largest `length` up to which rope_frequencies(cfg, length) is the same as for length 1
// (dynamic: max_seq_len; longrope: the original context; the others: every length).
int64_t rope_constant_length(const ModelConfig& cfg);
// Plain RoPE over `dim` dimensions with base `theta`, no scaling (gemma3's sliding layers).
RopeFrequencies default_rope(int64_t dim, double theta);

// cos and sin (B, 1, T, D) of positions (B, T), scaled by the attention factor.
struct RotaryAngles {
  torch::Tensor cos, sin;
};
RotaryAngles rotary_angles(const torch::Tensor& position_ids, const RopeFrequencies& rope);
// x (B, H, T, D) rotated by the angles of its positions (HF's rotate-half layout). Angles of fewer
// dimensions R than D (partial rotary) turn the first R and leave the rest.
torch::Tensor rotate(const torch::Tensor& x, const RotaryAngles& angles);

// Llama's rotary embedding in the Hugging Face rotate-half layout.
// x (B, H, T, D), position_ids (B, T) -> (B, H, T, D)
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& position_ids, double theta);

// rope_theta and rope_scaling (v4) or rope_parameters (v5) of a config.json into c.rope_theta and
// c.rope (c.max_seq_len and c.rotary_dim() must be set). InputError naming the key.
void read_hf_rope(const HfConfigJson& j, ModelConfig& c);
// The same keys as transformers v4 writes them (v5 migrates them on load).
void write_hf_rope(const ModelConfig& c, nlohmann::json& j);

}  // namespace lmforge::trainer
