// trainer/models/attention.h -- causal attention for every family: full (with packed-document
// and sliding-window masks) and incremental over a KV cache. Projections and RoPE are the families'.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "trainer/models/model.h"

namespace lmforge::trainer {

// Causal attention over (B, H, T, D) with k/v already expanded to H heads. `allowed` (B, 1, T, T)
// bool, when defined, replaces the causal mask (packed documents that must not see each other).
// softcap > 0 turns the scores s into softcap * tanh(s / softcap) before the mask (gemma2).
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& allowed = {}, double softcap = 0);

// (T, L) bool: query i, at position past + i, sees key j when j <= past + i and, with a window,
// past + i - j < window.
torch::Tensor visible_keys(int64_t t, int64_t past, int64_t window, const torch::Device& device);

// segments (B, T) -> (B, 1, T, T) bool: query i sees key j when j <= i in the same segment;
// undefined segments give undefined (plain causal attention).
torch::Tensor allowed_attention(const torch::Tensor& segments);

// Appends k, v (B, Hkv, T, D) to layer `layer` of the cache at cache.length and attends q
// (B, H, T, D), at positions cache.length.., to every cached key up to its own position (and
// within `window` of it, when positive). Grouped heads are matched by reshaping q, so cached
// keys are never expanded. -> (B, H, T, D)
torch::Tensor cached_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               KVCache& cache, size_t layer, int64_t window = 0, double softcap = 0);

// An empty cache of `layers` layers for `batch` sequences of up to `capacity` positions.
KVCache empty_cache(const torch::nn::Module& model, int64_t layers, int64_t batch, int64_t capacity);

// Positions 0..T-1 (default) or offset..offset+T-1 for every row of tokens (B, T). -> (B, T)
torch::Tensor default_positions(const torch::Tensor& tokens);
torch::Tensor positions_from(const torch::Tensor& tokens, int64_t offset);

}  // namespace lmforge::trainer
