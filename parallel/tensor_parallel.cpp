// parallel/tensor_parallel.cpp -- the tp autograd primitives, the parallel layers (LoRA forms
// included), the vocab-parallel loss, the inference view and the conversion of a built model.
// The grid's splitting is grid.cpp's.
#include "parallel/tensor_parallel.h"

#include <cmath>

#include "parallel/grid.h"
#include "core/errors.h"

namespace lmforge::parallel {

namespace F = torch::nn::functional;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// The communicator travels through autograd's saved data as an integer: IValue has no pointer type.
void save_comm(AutogradContext* ctx, Comm* tp) { ctx->saved_data["tp"] = reinterpret_cast<int64_t>(tp); }
Comm& saved_comm(AutogradContext* ctx) { return *reinterpret_cast<Comm*>(ctx->saved_data["tp"].toInt()); }

torch::Tensor allreduce_sum(const torch::Tensor& x, Comm& tp) {
  auto out = x.clone(at::MemoryFormat::Contiguous);
  tp.allreduce(out, ReduceOp::sum);
  return out;
}

torch::Tensor allgather_last_dim(const torch::Tensor& x, Comm& tp) {  // (..., c) -> (..., p*c)
  return tp.allgather(x.movedim(-1, 0).contiguous()).movedim(0, -1).contiguous();
}

torch::Tensor own_slice_last_dim(const torch::Tensor& x, Comm& tp) {  // (..., p*c) -> (..., c)
  return x.chunk(tp.size(), -1)[tp.rank()].contiguous();
}

struct CopyToTp : torch::autograd::Function<CopyToTp> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, Comm* tp) {
    save_comm(ctx, tp);
    return x;  // returned inputs become views with this node as their history
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {allreduce_sum(grads[0], saved_comm(ctx)), torch::Tensor()};
  }
};

struct ReduceFromTp : torch::autograd::Function<ReduceFromTp> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, Comm* tp) { return allreduce_sum(x, *tp); }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return {grads[0], torch::Tensor()}; }
};

struct GatherFromTp : torch::autograd::Function<GatherFromTp> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, Comm* tp) {
    save_comm(ctx, tp);
    return allgather_last_dim(x, *tp);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {own_slice_last_dim(grads[0], saved_comm(ctx)), torch::Tensor()};
  }
};

struct ScatterToTp : torch::autograd::Function<ScatterToTp> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, Comm* tp) {
    save_comm(ctx, tp);
    return own_slice_last_dim(x, *tp);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {allgather_last_dim(grads[0], saved_comm(ctx)), torch::Tensor()};
  }
};

// A fresh parameter holding `value`, trainable as `like` is (a frozen base stays frozen).
torch::Tensor param(torch::nn::Module& m, const std::string& name, const torch::Tensor& value, const torch::Tensor& like) {
  return m.register_parameter(name, value.detach().clone(), like.requires_grad());
}

// A child module `name` holding one parameter, "weight" (LoraLinear's lora_A.weight naming). Built
// without torch::nn::Linear, whose initialisation would draw from the generator: parallelize()
// leaves the seed's stream where tp = 1 has it, so dropout masks stay those of one device.
torch::Tensor child_weight(torch::nn::Module& m, const std::string& name, const torch::Tensor& value,
                           const torch::Tensor& like) {
  return param(*m.register_module(name, std::make_shared<torch::nn::Module>()), "weight", value, like);
}

// Dropout on this rank's slice (..., c) of an input split along its last dim: every rank draws
// the full (..., p*c) mask (the generators of a tp group are in step) and keeps its slice, so the
// result is the slice of what at::dropout does on one device (same draws: bernoulli_ on the shape).
torch::Tensor dropout_of_slice(const torch::Tensor& x, double p, bool training, Comm& tp) {
  if (!training || p == 0) return x;
  auto sizes = x.sizes().vec();
  sizes.back() *= tp.size();
  auto noise = torch::empty(sizes, x.options()).bernoulli_(1 - p).div_(1 - p);
  return x * own_slice_last_dim(noise, tp);
}

torch::Tensor lora_dropout(const torch::Tensor& x, double p, bool training) {
  return F::dropout(x, F::DropoutFuncOptions().p(p).training(training));
}

void check_not_dora(const trainer::LoraLinearImpl& full) {
  if (full.lora_magnitude_vector.defined())
    throw InputError("peft.method dora with parallel.tp > 1 is not supported: DoRA's row norms need the whole "
                     "weight; use peft.method lora or parallel.tp: 1");
}

}  // namespace

torch::Tensor copy_to_tp(const torch::Tensor& x, Comm& tp) { return CopyToTp::apply(x, &tp); }
torch::Tensor reduce_from_tp(const torch::Tensor& x, Comm& tp) { return ReduceFromTp::apply(x, &tp); }
torch::Tensor gather_from_tp(const torch::Tensor& x, Comm& tp) { return GatherFromTp::apply(x, &tp); }
torch::Tensor scatter_to_tp(const torch::Tensor& x, Comm& tp) { return ScatterToTp::apply(x, &tp); }

torch::Tensor shard_of(const torch::Tensor& full, ShardSpec spec, int rank, int size) {
  std::vector<torch::Tensor> parts;
  for (const auto& block : full.chunk(spec.groups, spec.dim)) parts.push_back(block.chunk(size, spec.dim)[rank]);
  return torch::cat(parts, spec.dim);
}

torch::Tensor gather_shards(const torch::Tensor& local, ShardSpec spec, Comm& tp) {
  auto ranks = tp.allgather(local.movedim(spec.dim, 0).contiguous()).movedim(0, spec.dim).chunk(tp.size(), spec.dim);
  std::vector<torch::Tensor> parts;  // group-major: all ranks' block 0, then block 1, ...
  for (int64_t g = 0; g < spec.groups; ++g)
    for (const auto& r : ranks) parts.push_back(r.chunk(spec.groups, spec.dim)[g]);
  return torch::cat(parts, spec.dim);
}

torch::Tensor SharedCopyTo::operator()(const torch::Tensor& x, Comm& tp) {
  if (!input_.defined() || !input_.is_same(x) || copied_.requires_grad() != torch::GradMode::is_enabled()) {
    input_ = x;
    copied_ = copy_to_tp(x, tp);
  }
  return copied_;
}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(const trainer::DenseLinearImpl& full, Comm& tp, int64_t groups,
                                                   std::shared_ptr<SharedCopyTo> copy)
    : ColumnParallelLinearImpl(full.weight, full.bias, tp, groups, std::move(copy)) {}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias,
                                                   Comm& tp, int64_t groups, std::shared_ptr<SharedCopyTo> copy)
    : tp(tp), copy(std::move(copy)) {
  ShardSpec spec{0, groups};
  weight = param(*this, "weight", shard_of(full_weight, spec, tp.rank(), tp.size()), full_weight);
  if (full_bias.defined()) bias = param(*this, "bias", shard_of(full_bias, spec, tp.rank(), tp.size()), full_bias);
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) {
  return output(F::linear((*copy)(x, tp), weight, bias));
}

torch::Tensor ColumnParallelLinearImpl::output(const torch::Tensor& local) {
  return gather_output ? gather_from_tp(local, tp) : local;
}

RowParallelLinearImpl::RowParallelLinearImpl(const trainer::DenseLinearImpl& full, Comm& tp)
    : RowParallelLinearImpl(full.weight, full.bias, tp) {}

RowParallelLinearImpl::RowParallelLinearImpl(const torch::Tensor& full_weight, const torch::Tensor& full_bias, Comm& tp)
    : tp(tp) {
  weight = param(*this, "weight", shard_of(full_weight, {1, 1}, tp.rank(), tp.size()), full_weight);
  if (full_bias.defined()) bias = param(*this, "bias", full_bias, full_bias);
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x) {
  auto y = reduce_from_tp(F::linear(x, weight), tp);
  return bias.defined() ? y + bias : y;
}

ColumnParallelLoraImpl::ColumnParallelLoraImpl(const trainer::LoraLinearImpl& full, Comm& tp, int64_t groups,
                                               std::shared_ptr<SharedCopyTo> copy)
    : ColumnParallelLinearImpl(full.weight, full.bias, tp, groups, std::move(copy)),
      scale(full.scale),
      dropout(full.dropout->options.p()) {
  check_not_dora(full);
  const auto& a = full.lora_A->weight;
  const auto& b = full.lora_B->weight;
  lora_A = child_weight(*this, "lora_A", a, a);
  lora_B = child_weight(*this, "lora_B", shard_of(b, {0, groups}, tp.rank(), tp.size()), b);
}

torch::Tensor ColumnParallelLoraImpl::forward(const torch::Tensor& x) {
  auto y = F::linear((*copy)(x, tp), weight, bias);                          // (..., out/p)
  auto h = copy_to_tp(F::linear(lora_dropout(x, dropout, is_training()), lora_A), tp);  // (..., r), whole
  return output(y + F::linear(h, lora_B) * scale);
}

RowParallelLoraImpl::RowParallelLoraImpl(const trainer::LoraLinearImpl& full, Comm& tp)
    : RowParallelLinearImpl(full.weight, full.bias, tp), scale(full.scale), dropout(full.dropout->options.p()) {
  check_not_dora(full);
  const auto& a = full.lora_A->weight;
  const auto& b = full.lora_B->weight;
  lora_A = child_weight(*this, "lora_A", shard_of(a, {1, 1}, tp.rank(), tp.size()), a);
  lora_B = child_weight(*this, "lora_B", b, b);
}

torch::Tensor RowParallelLoraImpl::forward(const torch::Tensor& x) {
  auto h = reduce_from_tp(F::linear(dropout_of_slice(x, dropout, is_training(), tp), lora_A), tp);  // (..., r)
  return RowParallelLinearImpl::forward(x) + F::linear(h, lora_B) * scale;
}

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(const trainer::TokenEmbeddingImpl& full, Comm& tp)
    : vocab_start(full.weight.size(0) / tp.size() * tp.rank()), tp(tp) {
  weight = param(*this, "weight", shard_of(full.weight, {0, 1}, tp.rank(), tp.size()), full.weight);
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
class WholeEmbeddingImpl : public trainer::LayerImpl {
 public:
  explicit WholeEmbeddingImpl(const torch::Tensor& table) { weight = register_parameter("weight", table, false); }
  torch::Tensor forward(const torch::Tensor& ids) override { return F::embedding(ids, weight); }  // (B, T, C)
  bool is_embedding() const override { return true; }
  torch::Tensor weight;  // (V, C)
};

}  // namespace

InferenceView::InferenceView(trainer::CausalLMImpl& model) : model_(model) {
  for (const auto& [path, layer] : trainer::named_layers(model)) {
    if (auto* table = dynamic_cast<VocabParallelEmbeddingImpl*>(layer.get())) {
      torch::NoGradGuard no_grad;
      embedding_path_ = path;
      embedding_ = layer;
      trainer::replace_layer(model, path, std::make_shared<WholeEmbeddingImpl>(gather_shards(table->weight, {0, 1}, table->tp)));
    }
    if (path != "lm_head") continue;
    if (auto* column = dynamic_cast<ColumnParallelLinearImpl*>(layer.get())) flag_ = &column->gather_output;
    if (auto* tied = dynamic_cast<VocabParallelTiedHeadImpl*>(layer.get())) flag_ = &tied->gather_output;
  }
  if (flag_) *flag_ = true;
}

InferenceView::~InferenceView() {
  if (flag_) *flag_ = false;
  if (embedding_) trainer::replace_layer(model_, embedding_path_, embedding_);
}

torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, Comm& tp) {
  auto z = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat);  // (N, V/p)
  auto t = targets.reshape({-1});                                     // (N)
  const int64_t rows = z.size(1), start = rows * tp.rank();
  // The max only keeps exp() in range; any constant per row gives the same loss, so no gradient.
  auto max = std::get<0>(z.detach().max(-1)).contiguous();
  tp.allreduce(max, ReduceOp::max);
  auto shifted = z - max.unsqueeze(1);  // (N, V/p)
  auto local = t - start;
  auto outside = local.lt(0).logical_or(local.ge(rows));  // the target id is another rank's
  auto target_logit = shifted.gather(1, local.masked_fill(outside, 0).unsqueeze(1)).squeeze(1).masked_fill(outside, 0);
  target_logit = reduce_from_tp(target_logit, tp);                     // (N)
  auto sum_exp = reduce_from_tp(shifted.exp().sum(-1), tp);            // (N)
  auto valid = t.ne(-100).to(torch::kFloat);
  return ((sum_exp.log() - target_logit) * valid).sum() / valid.sum();
}

const ShardSpec* TensorParallel::spec_of(const std::string& name) const {
  auto it = shards.find(name);
  for (const std::string suffix : {".exp_avg", ".exp_avg_sq"}) {
    if (it == shards.end() && name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      it = shards.find(name.substr(0, name.size() - suffix.size()));
  }
  return it == shards.end() ? nullptr : &it->second;
}

NamedTensors TensorParallel::gather(const NamedTensors& local, const torch::Device& device) const {
  NamedTensors full;
  for (const auto& [name, t] : local) {
    const ShardSpec* spec = spec_of(name);
    auto value = t.detach();
    if (spec && value.dim() > 0) value = gather_shards(value.to(device), *spec, tp_);
    full.emplace_back(name, value.cpu());
  }
  return full;
}

NamedTensors TensorParallel::full_parameters(torch::nn::Module& model) const {
  NamedTensors local;
  for (const auto& item : model.named_parameters()) local.emplace_back(item.key(), item.value().detach());
  return local.empty() ? local : gather(local, local.front().second.device());
}

torch::Tensor TensorParallel::shard(const std::string& name, const torch::Tensor& full) const {
  const ShardSpec* spec = spec_of(name);
  return spec && full.dim() > 0 ? shard_of(full, *spec, tp_.rank(), tp_.size()) : full;
}

void TensorParallel::average_replicated_gradients(torch::nn::Module& model) const {
  if (tp_.size() == 1) return;
  std::vector<torch::Tensor> grads;
  for (const auto& item : model.named_parameters())
    if (!spec_of(item.key()) && item.value().grad().defined()) grads.push_back(item.value().grad());
  if (grads.empty()) return;
  std::vector<torch::Tensor> flat;
  for (const auto& g : grads) flat.push_back(g.reshape({-1}));
  auto buffer = torch::cat(flat);
  tp_.allreduce(buffer, ReduceOp::avg);
  int64_t offset = 0;
  for (auto& g : grads) {
    g.copy_(buffer.narrow(0, offset, g.numel()).view_as(g));
    offset += g.numel();
  }
}

double TensorParallel::clip_grad_norm(torch::nn::Module& model, double max_norm) const {
  std::vector<torch::Tensor> grads;
  double squares[2] = {0, 0};  // [shards (summed over tp), replicated (counted once)]
  for (const auto& item : model.named_parameters()) {
    auto g = item.value().grad();
    if (!g.defined()) continue;
    grads.push_back(g);
    squares[spec_of(item.key()) ? 0 : 1] += g.detach().to(torch::kDouble).pow(2).sum().item<double>();
  }
  auto shard_sum = torch::tensor({squares[0]}, torch::kDouble);
  if (!grads.empty()) shard_sum = shard_sum.to(grads.front().device());
  tp_.allreduce(shard_sum, ReduceOp::sum);
  double total = std::sqrt(shard_sum.item<double>() + squares[1]);
  if (max_norm > 0 && std::isfinite(total) && total > max_norm) {
    double scale = max_norm / (total + 1e-6);
    for (auto& g : grads) g.mul_(scale);
  }
  return total;
}

namespace {

enum class Split { column, row, none };

// Which way each layer of the llama and gpt2 families splits, by its leaf name.
Split split_of(const std::string& leaf) {
  for (const char* name : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "c_fc", "c_attn", "lm_head"})
    if (leaf == name) return Split::column;
  for (const char* name : {"o_proj", "down_proj", "c_proj"})
    if (leaf == name) return Split::row;
  return Split::none;
}

void check_divides(const std::string& path, const std::string& what, int64_t size, int64_t parts, int tp) {
  if (size % (parts * tp) != 0)
    throw InputError("parallel.tp " + std::to_string(tp) + ": " + path + " has " + std::to_string(size) + " " + what +
                     (parts > 1 ? " in " + std::to_string(parts) + " blocks" : "") +
                     ", not divisible by tp: every tp rank must hold an equal share");
}

// The tp form of a linear, plain or LoRA (`lora` set), recording its shards in `plan`: the weight
// split as split_of says, and of a LoRA layer's adapters B on a column-parallel base (by the base's
// groups), A on a row-parallel one; the other adapter is replicated.
trainer::Layer parallel_linear(const std::string& path, const trainer::DenseLinearImpl* dense,
                               const trainer::LoraLinearImpl* lora, Comm& tp, std::shared_ptr<SharedCopyTo>& copy,
                               TensorParallel& plan) {
  const std::string leaf = path.substr(path.rfind('.') + 1);
  const torch::Tensor& weight = lora ? lora->weight : dense->weight;
  const bool has_bias = (lora ? lora->bias : dense->bias).defined();
  Split split = split_of(leaf);
  if (split == Split::column) {
    const int64_t groups = leaf == "c_attn" ? 3 : 1;  // q, k and v thirds, each split by heads
    check_divides(path, "output features", weight.size(0), groups, tp.size());
    if (!copy) copy = std::make_shared<SharedCopyTo>();
    plan.shards[path + ".weight"] = {0, groups};
    if (has_bias) plan.shards[path + ".bias"] = {0, groups};
    if (!lora) return std::make_shared<ColumnParallelLinearImpl>(*dense, tp, groups, copy);
    plan.shards[path + ".lora_B.weight"] = {0, groups};
    return std::make_shared<ColumnParallelLoraImpl>(*lora, tp, groups, copy);
  }
  if (split == Split::row) {
    check_divides(path, "input features", weight.size(1), 1, tp.size());
    plan.shards[path + ".weight"] = {1, 1};
    if (!lora) return std::make_shared<RowParallelLinearImpl>(*dense, tp);
    plan.shards[path + ".lora_A.weight"] = {1, 1};
    return std::make_shared<RowParallelLoraImpl>(*lora, tp);
  }
  throw InputError("parallel.tp: no tensor-parallel rule for layer " + path);
}

}  // namespace

std::shared_ptr<TensorParallel> parallelize(trainer::CausalLMImpl& model, Grid& grid) {
  auto plan = std::make_shared<TensorParallel>(grid.tp());
  Comm& tp = grid.tp();
  if (tp.size() == 1) return plan;
  std::shared_ptr<VocabParallelEmbeddingImpl> embedding;
  std::string tied_head;
  std::map<std::string, std::shared_ptr<SharedCopyTo>> copies;  // by parent module: q/k/v, gate/up
  for (const auto& [path, layer] : trainer::named_layers(model)) {
    const auto dot = path.rfind('.');
    const std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
    trainer::Layer replacement;
    auto* lora = dynamic_cast<trainer::LoraLinearImpl*>(layer.get());
    auto* dense = dynamic_cast<trainer::DenseLinearImpl*>(layer.get());
    if (lora || dense) {
      replacement = parallel_linear(path, dense, lora, tp, copies[parent], *plan);
    } else if (auto table = std::dynamic_pointer_cast<trainer::TokenEmbeddingImpl>(layer)) {
      check_divides(path, "vocabulary rows", table->weight.size(0), 1, tp.size());
      replacement = embedding = std::make_shared<VocabParallelEmbeddingImpl>(*table, tp);
      plan->shards[path + ".weight"] = {0, 1};
    } else if (std::dynamic_pointer_cast<trainer::TiedHeadImpl>(layer)) {
      tied_head = path;  // replaced once the embedding it shares is
      continue;
    } else {
      throw InputError("parallel.tp: layer " + path + " is of a kind tensor parallelism cannot split");
    }
    trainer::replace_layer(model, path, replacement);
  }
  if (!tied_head.empty())
    trainer::replace_layer(model, tied_head, std::make_shared<VocabParallelTiedHeadImpl>(embedding->weight, tp));
  return plan;
}

}  // namespace lmforge::parallel
