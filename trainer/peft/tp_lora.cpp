// trainer/peft/tp_lora.cpp -- forward passes of LoRA on column- and row-parallel bases. The base
// layers are trainer/tp_layers.cpp's; which layer gets which form is parallelize.cpp's.
#include "trainer/peft/tp_lora.h"

#include "core/errors.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
using parallel::copy_to_tp;
using parallel::dropout_of_slice;
using parallel::reduce_from_tp;
using parallel::shard_of;

namespace {

torch::Tensor lora_dropout(const torch::Tensor& x, double p, bool training) {
  return F::dropout(x, F::DropoutFuncOptions().p(p).training(training));
}

void check_not_dora(const LoraLinearImpl& full) {
  if (full.lora_magnitude_vector.defined())
    throw InputError("peft.method dora with parallel.tp > 1 is not supported: DoRA's row norms need the whole "
                     "weight; use peft.method lora or parallel.tp: 1");
}

}  // namespace

ColumnParallelLoraImpl::ColumnParallelLoraImpl(const LoraLinearImpl& full, parallel::Comm& tp, int64_t groups,
                                               std::shared_ptr<parallel::SharedCopyTo> copy)
    : ColumnParallelLinearImpl(full.weight, full.bias, tp, groups, std::move(copy)),
      scale(full.scale),
      dropout(full.dropout->options.p()) {
  check_not_dora(full);
  const auto& a = full.lora_A->weight;
  const auto& b = full.lora_B->weight;
  lora_A = tp_child_weight(*this, "lora_A", a, a);
  lora_B = tp_child_weight(*this, "lora_B", shard_of(b, {0, groups}, tp.rank(), tp.size()), b);
}

torch::Tensor ColumnParallelLoraImpl::forward(const torch::Tensor& x) {
  auto y = F::linear((*copy)(x, tp), weight, bias);                          // (..., out/p)
  auto h = copy_to_tp(F::linear(lora_dropout(x, dropout, is_training()), lora_A), tp);  // (..., r), whole
  return output(y + F::linear(h, lora_B) * scale);
}

RowParallelLoraImpl::RowParallelLoraImpl(const LoraLinearImpl& full, parallel::Comm& tp)
    : RowParallelLinearImpl(full.weight, full.bias, tp), scale(full.scale), dropout(full.dropout->options.p()) {
  check_not_dora(full);
  const auto& a = full.lora_A->weight;
  const auto& b = full.lora_B->weight;
  lora_A = tp_child_weight(*this, "lora_A", shard_of(a, {1, 1}, tp.rank(), tp.size()), a);
  lora_B = tp_child_weight(*this, "lora_B", b, b);
}

torch::Tensor RowParallelLoraImpl::forward(const torch::Tensor& x) {
  auto h = reduce_from_tp(F::linear(dropout_of_slice(x, dropout, is_training(), tp), lora_A), tp);  // (..., r)
  return RowParallelLinearImpl::forward(x) + F::linear(h, lora_B) * scale;
}

}  // namespace lmforge::trainer
