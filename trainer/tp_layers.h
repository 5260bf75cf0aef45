// trainer/tp_layers.h -- the tensor-parallel forms of the model's replaceable layers (column/row-
// parallel linears, vocab-parallel embedding and tied head) and the inference view of a split model.
// The primitives are parallel/tensor_parallel.h's; which layer splits how is the family's plan.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "parallel/tensor_parallel.h"
#include "trainer/models/model.h"

namespace lmforge::trainer {

// Y = X A^T + b with this rank's rows of A: weight (out/p, in), bias (out/p). Output stays sharded,
// unless gather_output is set (the output head during inference: see InferenceView).
class ColumnParallelLinearImpl : public LayerImpl {
 public:
  ColumnParallelLinearImpl(const DenseLinearImpl& full, parallel::Comm& tp, int64_t groups = 1,
                           std::shared_ptr<parallel::SharedCopyTo> copy = std::make_shared<parallel::SharedCopyTo>());
  // From the full weight (out, in) and bias (out, or undefined).
  ColumnParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias, parallel::Comm& tp, int64_t groups,
                           std::shared_ptr<parallel::SharedCopyTo> copy);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in) -> (..., out/p)
  torch::Tensor weight, bias;
  parallel::Comm& tp;
  std::shared_ptr<parallel::SharedCopyTo> copy;
  bool gather_output = false;  // (..., out) instead of (..., out/p)

 protected:
  torch::Tensor output(const torch::Tensor& local);  // local, or gathered with gather_output
};

// Y = sum over tp of X_r A_r^T, then + b: weight (out, in/p); the bias is whole, added once after the sum.
class RowParallelLinearImpl : public LayerImpl {
 public:
  RowParallelLinearImpl(const DenseLinearImpl& full, parallel::Comm& tp);
  RowParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias, parallel::Comm& tp);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in/p) -> (..., out)
  torch::Tensor weight, bias;
  parallel::Comm& tp;
};

// Rows vocab_start .. vocab_start + V/p of the token table; ids outside them contribute zeros
// and the ranks' rows are summed, so every rank gets the full embedding.
class VocabParallelEmbeddingImpl : public LayerImpl {
 public:
  VocabParallelEmbeddingImpl(const TokenEmbeddingImpl& full, parallel::Comm& tp);
  torch::Tensor forward(const torch::Tensor& ids) override;  // (B, T) -> (B, T, C)
  bool is_embedding() const override { return true; }
  torch::Tensor weight;  // (V/p, C)
  int64_t vocab_start;
  parallel::Comm& tp;
};

// A tied output head over the vocab-parallel embedding's rows (held, not registered):
// (B, T, C) -> this rank's logits (B, T, V/p).
class VocabParallelTiedHeadImpl : public LayerImpl {
 public:
  VocabParallelTiedHeadImpl(torch::Tensor embedding_weight, parallel::Comm& tp) : weight(std::move(embedding_weight)), tp(tp) {}
  torch::Tensor forward(const torch::Tensor& h) override;
  torch::Tensor weight;
  parallel::Comm& tp;
  bool gather_output = false;  // (B, T, V) instead of (B, T, V/p): see InferenceView
};

// While alive, a tp-split model looks whole to inference code written for one device (eval
// suites, scoring, generation), on every tp rank: the output head returns the full logits
// (B, T, V), gathered from the ranks' vocab slices, and the token embedding is a whole table
// (gathered once), so the vocabulary checks see V rows. Training keeps the slices
// (vocab_parallel_cross_entropy_sum). A model that was not split is left alone. Collective.
class InferenceView {
 public:
  explicit InferenceView(CausalLMImpl& model);
  ~InferenceView();
  InferenceView(const InferenceView&) = delete;
  InferenceView& operator=(const InferenceView&) = delete;

 private:
  CausalLMImpl& model_;
  bool* flag_ = nullptr;                // the head's gather_output
  std::string embedding_path_;         // the vocab-parallel embedding, swapped out while alive
  Layer embedding_;
};

// A fresh parameter `name` of `m` holding a copy of `value`, trainable as `like` is (a frozen base
// stays frozen).
torch::Tensor tp_param(torch::nn::Module& m, const std::string& name, const torch::Tensor& value, const torch::Tensor& like);
// A child module `name` holding one parameter, "weight" (LoraLinear's lora_A.weight naming). Built
// without torch::nn::Linear, whose initialisation would draw from the generator: parallelize()
// leaves the seed's stream where tp = 1 has it, so dropout masks stay those of one device.
torch::Tensor tp_child_weight(torch::nn::Module& m, const std::string& name, const torch::Tensor& value,
                              const torch::Tensor& like);

}  // namespace lmforge::trainer
