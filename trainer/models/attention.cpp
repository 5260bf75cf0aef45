// trainer/models/attention.cpp -- scaled dot-product attention (LibTorch 2.x's fused kernel, or the
// matmul form on 1.13), masks, and the KV-cache path. Projections and RoPE are the families'.
#include "trainer/models/attention.h"

#include <cmath>
#include <limits>

namespace lmforge::trainer {

torch::Tensor default_positions(const torch::Tensor& tokens) {
  auto t = torch::arange(tokens.size(1), tokens.options());
  return t.unsqueeze(0).expand({tokens.size(0), tokens.size(1)});  // (B, T)
}

torch::Tensor positions_from(const torch::Tensor& tokens, int64_t offset) {
  auto t = torch::arange(offset, offset + tokens.size(1), tokens.options().dtype(torch::kLong));
  return t.unsqueeze(0).expand({tokens.size(0), tokens.size(1)});  // (B, T)
}

// q k^T / sqrt(D), soft-capped when softcap > 0: (B, H, T, D) x (B, H, L, D) -> (B, H, T, L)
static torch::Tensor attention_scores(const torch::Tensor& q, const torch::Tensor& k, double softcap) {
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  return softcap > 0 ? torch::tanh(scores / softcap) * softcap : scores;
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& allowed, double softcap) {
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  if (softcap <= 0) {  // the fused kernel has no soft-capping
    if (allowed.defined()) return at::scaled_dot_product_attention(q, k, v, allowed, 0.0, /*is_causal=*/false);
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  }
#endif
  int64_t t = q.size(2);
  auto scores = attention_scores(q, k, softcap);
  auto hidden = allowed.defined() ? allowed.logical_not()
                                  : torch::ones({t, t}, torch::dtype(torch::kBool).device(q.device())).triu(1);
  scores = scores.masked_fill(hidden, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1).to(v.dtype()), v);  // (B, H, T, D)
}

torch::Tensor visible_keys(int64_t t, int64_t past, int64_t window, const torch::Device& device) {
  auto query = torch::arange(past, past + t, torch::dtype(torch::kLong).device(device)).unsqueeze(1);  // (T, 1)
  auto key = torch::arange(past + t, torch::dtype(torch::kLong).device(device)).unsqueeze(0);           // (1, L)
  auto visible = key <= query;
  return window > 0 ? visible.logical_and(query - key < window) : visible;
}

torch::Tensor cached_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               KVCache& cache, size_t layer, int64_t window, double softcap) {
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
  auto scores = attention_scores(qg, keys, softcap);        // (B, Hkv, G*T, L)
  if (t > 1 || (window > 0 && total > window)) {
    auto hidden = visible_keys(t, past, window, q.device()).logical_not();  // (T, L)
    scores = scores.view({b, hkv, h / hkv, t, total})
                 .masked_fill(hidden, -std::numeric_limits<float>::infinity())
                 .view({b, hkv, (h / hkv) * t, total});
  }
  auto y = torch::matmul(torch::softmax(scores, -1).to(values.dtype()), values);  // (B, Hkv, G*T, D)
  return y.view({b, h, t, d});
}

KVCache empty_cache(const torch::nn::Module& model, int64_t layers, int64_t batch, int64_t capacity) {
  KVCache cache;
  cache.keys.resize(static_cast<size_t>(layers));
  cache.values.resize(static_cast<size_t>(layers));
  cache.capacity = capacity;
  cache.tokens = torch::zeros({batch, capacity}, torch::dtype(torch::kLong).device(model.parameters().front().device()));
  return cache;
}

torch::Tensor allowed_attention(const torch::Tensor& segments) {
  if (!segments.defined()) return {};
  int64_t t = segments.size(1);
  auto causal = torch::ones({t, t}, torch::dtype(torch::kBool).device(segments.device())).tril();
  return (segments.unsqueeze(2) == segments.unsqueeze(1)).logical_and(causal).unsqueeze(1);
}

}  // namespace lmforge::trainer
