// trainer/peft/lora_layer.cpp -- the LoRA/DoRA forward pass, initialisation and fp32 merge.
// No model surgery here.
#include "trainer/peft/lora_layer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/errors.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using json = nlohmann::json;

LoraLinearImpl::LoraLinearImpl(const DenseLinearImpl& base, const PeftConfig& cfg) : scale(cfg.scale()) {
  weight = register_parameter("weight", base.weight, /*requires_grad=*/false);
  if (base.bias.defined()) bias = register_parameter("bias", base.bias, /*requires_grad=*/false);
  const int64_t out = weight.size(0), in = weight.size(1);
  lora_A = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(in, cfg.r).bias(false)));
  lora_B = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(cfg.r, out).bias(false)));
  dropout = register_module("lora_dropout", torch::nn::Dropout(cfg.dropout));
  torch::NoGradGuard no_grad;
  if (cfg.init == LoraInit::gaussian) lora_A->weight.normal_(0.0, 1.0 / static_cast<double>(cfg.r));
  lora_B->weight.zero_();
  lora_A->to(weight.device(), weight.scalar_type());
  lora_B->to(weight.device(), weight.scalar_type());
  if (cfg.method == PeftMethod::dora)
    lora_magnitude_vector = register_parameter("lora_magnitude_vector", weight.norm(2, {1}).detach().clone());
}

torch::Tensor LoraLinearImpl::dora_row_scale(const torch::Tensor& combined) const {
  // The norm is a constant to the gradient, as in the DoRA paper (section 4.3) and PEFT.
  return lora_magnitude_vector / combined.norm(2, {1}).detach();
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  auto y = F::linear(x, weight, bias);                   // (..., out): the base, bit-identical to DenseLinear
  auto update = lora_B(lora_A(dropout(x))) * scale;      // (..., out): zero at init
  if (!lora_magnitude_vector.defined()) return y + update;
  // PEFT's DoRA form: base + (m/||W'|| - 1) x W^T + m/||W'|| * update; exactly the base at init.
  auto row = dora_row_scale(weight + torch::mm(lora_B->weight, lora_A->weight) * scale);  // (out)
  return y + (row - 1) * F::linear(x, weight) + row * update;
}

torch::Tensor LoraLinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  auto w = weight.to(torch::kFloat);
  auto merged = w + torch::mm(lora_B->weight.to(torch::kFloat), lora_A->weight.to(torch::kFloat)) * scale;
  if (lora_magnitude_vector.defined())
    merged = merged * (lora_magnitude_vector.to(torch::kFloat) / merged.norm(2, {1})).unsqueeze(1);
  return merged.to(weight.scalar_type());
}

}  // namespace lmforge::trainer
