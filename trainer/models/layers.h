// trainer/models/layers.h -- the replaceable-layer seam every family builds on: one-tensor layers
// (dense linear, token embedding, tied head), hosts that can swap them, and shared small parts.
// What replaces them (LoRA in trainer/peft/, tensor parallelism in trainer/parallelize.h) lives elsewhere.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lmforge::trainer {

// A layer the model calls with one tensor: the seam where LoRA (trainer/peft/) and tensor
// parallelism (trainer/parallelize.h) put in their own versions without the model knowing of them.
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
// The rows of the model's token embedding (its vocabulary), or -1 when it has none.
int64_t embedding_rows(torch::nn::Module& root);

// A fresh dense linear, uninitialised (build_model initialises every parameter).
Layer make_linear(int64_t in, int64_t out, bool bias);
// The output head: its own (C -> V) linear, or the token embedding's weight when tied.
Layer make_head(int64_t hidden, int64_t vocab, bool tied, const Layer& embedding);
// relu | gelu | silu | gelu_new (the tanh approximation, GPT-2's default).
torch::Tensor activate(const std::string& name, const torch::Tensor& x);

// y = w * x / rms(x), normalised in fp32; with plus_one, y = (1 + w) * x / rms(x) scaled in fp32
// (gemma's norms). Parameter: weight (C).
struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps, bool plus_one = false);
  torch::Tensor forward(const torch::Tensor& x);  // (..., C)
  torch::Tensor weight;
  double eps;
  bool plus_one;
};
TORCH_MODULE(RMSNorm);

}  // namespace lmforge::trainer
