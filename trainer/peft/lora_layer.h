// trainer/peft/lora_layer.h -- the LoRA/DoRA layer: a frozen linear plus a trainable low-rank update,
// and its merged weight. Which layers get one is apply.h's; its tp forms are tp_lora.h's.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "trainer/models/layers.h"
#include "trainer/peft/peft_config.h"

namespace lmforge::trainer {

// A frozen linear plus a trainable low-rank update: y = x W^T + b + scale * B(A(dropout(x))).
// DoRA rescales each output row of W + scale * B A to the learned magnitude. Parameter names
// (weight, bias, lora_A.weight, lora_B.weight, lora_magnitude_vector) are PEFT's after its prefix.
class LoraLinearImpl : public LayerImpl {
 public:
  LoraLinearImpl(const DenseLinearImpl& base, const PeftConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;  // (..., in) -> (..., out)
  // W + scale * B A (DoRA: row-rescaled), computed in fp32, returned in W's dtype. (out, in)
  torch::Tensor merged_weight() const;

  torch::Tensor weight, bias;          // the base's own tensors, frozen
  torch::nn::Linear lora_A{nullptr};   // (r, in)
  torch::nn::Linear lora_B{nullptr};   // (out, r), zero at init: the adapted model starts as the base
  torch::Tensor lora_magnitude_vector; // (out) DoRA only: ||W||_row at init
  torch::nn::Dropout dropout{nullptr};
  double scale;

 private:
  torch::Tensor dora_row_scale(const torch::Tensor& combined) const;  // (out) m / ||W + s B A||_row
};

}  // namespace lmforge::trainer
