// trainer/tp_layers.cpp -- forward passes of the tensor-parallel layers and the inference view.
// Which layers become which is parallelize.cpp's; LoRA's tp forms are trainer/peft/tp_lora.cpp's.
#include "trainer/tp_layers.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
using parallel::copy_to_tp;
using parallel::gather_from_tp;
using parallel::gather_shards;
using parallel::reduce_from_tp;
using parallel::shard_of;

torch::Tensor tp_param(torch::nn::Module& m, const std::string& name, const torch::Tensor& value, const torch::Tensor& like) {
  return m.register_parameter(name, value.detach().clone(), like.requires_grad());
}

torch::Tensor tp_child_weight(torch::nn::Module& m, const std::string& name, const torch::Tensor& value,
                              const torch::Tensor& like) {
  return tp_param(*m.register_module(name, std::make_shared<torch::nn::Module>()), "weight", value, like);
}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(const DenseLinearImpl& full, parallel::Comm& tp, int64_t groups,
                                                   std::shared_ptr<parallel::SharedCopyTo> copy)
    : ColumnParallelLinearImpl(full.weight, full.bias, tp, groups, std::move(copy)) {}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias,
                                                   parallel::Comm& tp, int64_t groups, std::shared_ptr<parallel::SharedCopyTo> copy)
    : tp(tp), copy(std::move(copy)) {
  parallel::ShardSpec spec{0, groups};
  weight = tp_param(*this, "weight", shard_of(full_weight, spec, tp.rank(), tp.size()), full_weight);
  if (full_bias.defined()) bias = tp_param(*this, "bias", shard_of(full_bias, spec, tp.rank(), tp.size()), full_bias);
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) {
  return output(F::linear((*copy)(x, tp), weight, bias));
}

torch::Tensor ColumnParallelLinearImpl::output(const torch::Tensor& local) {
  return gather_output ? gather_from_tp(local, tp) : local;
}

RowParallelLinearImpl::RowParallelLinearImpl(const DenseLinearImpl& full, parallel::Comm& tp)
    : RowParallelLinearImpl(full.weight, full.bias, tp) {}

RowParallelLinearImpl::RowParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias, parallel::Comm& tp)
    : tp(tp) {
  weight = tp_param(*this, "weight", shard_of(full_weight, {1, 1}, tp.rank(), tp.size()), full_weight);
  if (full_bias.defined()) bias = tp_param(*this, "bias", full_bias, full_bias);
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x) {
  auto y = reduce_from_tp(F::linear(x, weight), tp);
  return bias.defined() ? y + bias : y;
}

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(const TokenEmbeddingImpl& full, parallel::Comm& tp)
    : vocab_start(full.weight.size(0) / tp.size() * tp.rank()), tp(tp) {
  weight = tp_param(*this, "weight", shard_of(full.weight, {0, 1}, tp.rank(), tp.size()), full.weight);
}

torch::Tensor VocabParallelEmbeddingImpl::forward(const torch::Tensor& ids) {
  auto local = ids - vocab_start;                                  // (B, T)
  auto outside = local.lt(0).logical_or(local.ge(weight.size(0)));  // ids another rank holds
  auto rows = F::embedding(local.masked_fill(outside, 0), weight);   // (B, T, C)
  return reduce_from_tp(rows.masked_fill(outside.unsqueeze(-1), 0), tp);
}

torch::Tensor VocabParallelTiedHeadImpl::forward(const torch::Tensor& h) {
  auto local = F::linear(copy_to_tp(h, tp), weight);  // (B, T, V/p)
  return gather_output ? gather_from_tp(local, tp) : local;
}

namespace {

// A whole token table for inference (the gathered vocab-parallel one); built without drawing from
// the generator, unlike TokenEmbeddingImpl, so evaluating leaves the training's random stream alone.
class WholeEmbeddingImpl : public LayerImpl {
 public:
  explicit WholeEmbeddingImpl(const torch::Tensor& table) { weight = register_parameter("weight", table, false); }
  torch::Tensor forward(const torch::Tensor& ids) override { return F::embedding(ids, weight); }  // (B, T, C)
  bool is_embedding() const override { return true; }
  torch::Tensor weight;  // (V, C)
};

}  // namespace

InferenceView::InferenceView(CausalLMImpl& model) : model_(model) {
  for (const auto& [path, layer] : named_layers(model)) {
    if (auto* table = dynamic_cast<VocabParallelEmbeddingImpl*>(layer.get())) {
      torch::NoGradGuard no_grad;
      embedding_path_ = path;
      embedding_ = layer;
      replace_layer(model, path, std::make_shared<WholeEmbeddingImpl>(gather_shards(table->weight, {0, 1}, table->tp)));
    }
    if (path != "lm_head") continue;
    if (auto* column = dynamic_cast<ColumnParallelLinearImpl*>(layer.get())) flag_ = &column->gather_output;
    if (auto* tied = dynamic_cast<VocabParallelTiedHeadImpl*>(layer.get())) flag_ = &tied->gather_output;
  }
  if (flag_) *flag_ = true;
}

InferenceView::~InferenceView() {
  if (flag_) *flag_ = false;
  if (embedding_) replace_layer(model_, embedding_path_, embedding_);
}

}  // namespace lmforge::trainer
