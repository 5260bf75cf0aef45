// trainer/peft/tp_lora.h -- LoRA on tensor-parallel layers: the adapters split as their base layer
// is (B with a column-parallel base, A with a row-parallel one). parallelize() chooses the forms.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "trainer/peft/lora_layer.h"
#include "trainer/tp_layers.h"

namespace lmforge::trainer {

// LoRA (lora_layer.h) on a column-parallel base: lora_A (r, in) whole on every rank, lora_B
// (out/p, r) this rank's rows of the outputs (by `groups`, as the base). h = A dropout(x) is
// computed on the replicated input, then copy-to-tp: its backward sums the ranks' partial
// gradients of h, so A's gradient is whole and the same on every rank. Parameter names are
// LoraLinear's (weight, bias, lora_A.weight, lora_B.weight). DoRA is not supported.
class ColumnParallelLoraImpl : public ColumnParallelLinearImpl {
 public:
  ColumnParallelLoraImpl(const LoraLinearImpl& full, parallel::Comm& tp, int64_t groups, std::shared_ptr<parallel::SharedCopyTo> copy);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in) -> (..., out/p)
  torch::Tensor lora_A, lora_B;  // (r, in), (out/p, r)
  double scale, dropout;
};

// LoRA on a row-parallel base: lora_A (r, in/p) this rank's input columns, lora_B (out, r) whole.
// h = reduce-from-tp(dropout(x_r) A_r^T) is whole on every rank; h B^T is added after the base's
// reduce. The dropout mask is the slice of the full-width mask every rank draws alike, so it is
// the mask one device draws.
class RowParallelLoraImpl : public RowParallelLinearImpl {
 public:
  RowParallelLoraImpl(const LoraLinearImpl& full, parallel::Comm& tp);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in/p) -> (..., out)
  torch::Tensor lora_A, lora_B;  // (r, in/p), (out, r)
  double scale, dropout;
};

}  // namespace lmforge::trainer
