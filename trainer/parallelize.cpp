// trainer/parallelize.cpp -- which layer becomes which tp form (by the family's tp_rule), the shard
// bookkeeping (gather, shard, replicated-gradient averaging, clipping) and the layout checks.
#include "trainer/parallelize.h"

#include <cmath>

#include "core/errors.h"
#include "core/files.h"
#include "core/host_sync.h"
#include "parallel/grad_sync.h"
#include "trainer/models/family.h"
#include "trainer/peft/tp_lora.h"
#include "trainer/tp_layers.h"

namespace lmforge::trainer {

const parallel::ShardSpec* TensorParallel::spec_of(const std::string& name) const {
  auto it = shards.find(name);
  for (const std::string suffix : {".exp_avg", ".exp_avg_sq"}) {
    if (it == shards.end() && name.size() > suffix.size() && ends_with(name, suffix))
      it = shards.find(name.substr(0, name.size() - suffix.size()));
  }
  return it == shards.end() ? nullptr : &it->second;
}

NamedTensors TensorParallel::gather(const NamedTensors& local, const torch::Device& device) const {
  NamedTensors full;
  for (const auto& [name, t] : local) {
    const parallel::ShardSpec* spec = spec_of(name);
    auto value = t.detach();
    if (spec && value.dim() > 0) value = parallel::gather_shards(value.to(device), *spec, tp_);
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
  const parallel::ShardSpec* spec = spec_of(name);
  return spec && full.dim() > 0 ? parallel::shard_of(full, *spec, tp_.rank(), tp_.size()) : full;
}

void TensorParallel::average_replicated_gradients(torch::nn::Module& model) const {
  if (tp_.size() == 1) return;
  std::vector<torch::Tensor> grads;
  std::vector<double> weights;  // the average of weight x gradient: tp.size() for summed ones
  for (const auto& item : model.named_parameters()) {
    if (spec_of(item.key()) || !item.value().grad().defined()) continue;
    grads.push_back(item.value().grad());
    weights.push_back(head_summed.count(item.key()) ? static_cast<double>(tp_.size()) : 1.0);
  }
  if (grads.empty()) return;
  std::vector<torch::Tensor> flat;
  for (size_t i = 0; i < grads.size(); ++i) flat.push_back(weights[i] == 1.0 ? grads[i].reshape({-1}) : grads[i].reshape({-1}) * weights[i]);
  auto buffer = torch::cat(flat);
  tp_.allreduce(buffer, parallel::ReduceOp::avg);
  int64_t offset = 0;
  for (auto& g : grads) {
    g.copy_(buffer.narrow(0, offset, g.numel()).view_as(g));
    offset += g.numel();
  }
}

torch::Tensor TensorParallel::clip_gradients(torch::nn::Module& model, double max_norm) const {
  std::vector<torch::Tensor> grads;
  torch::Tensor squares[2];  // [shards (summed over tp), replicated (counted once)], double on the device
  for (const auto& item : model.named_parameters()) {
    auto g = item.value().grad();
    if (!g.defined()) continue;
    grads.push_back(g);
    torch::Tensor& sum = squares[spec_of(item.key()) ? 0 : 1];
    auto square = g.detach().to(torch::kDouble).pow(2).sum();
    sum = sum.defined() ? sum + square : square;
  }
  const auto options = torch::dtype(torch::kDouble).device(grads.empty() ? torch::kCPU : grads.front().device());
  for (auto& sum : squares)
    if (!sum.defined()) sum = torch::zeros({}, options);
  auto shard_sum = squares[0].reshape({1}).contiguous();
  tp_.allreduce(shard_sum, parallel::ReduceOp::sum);
  auto total = (shard_sum[0] + squares[1]).sqrt();
  parallel::clip_to_norm(grads, total, max_norm);
  return total;
}

double TensorParallel::clip_grad_norm(torch::nn::Module& model, double max_norm) const {
  return read_to_host(clip_gradients(model, max_norm)).item<double>();
}

namespace {

void check_divides(const std::string& path, const std::string& what, int64_t size, int64_t parts, int tp) {
  if (size % (parts * tp) != 0)
    throw InputError("parallel.tp " + std::to_string(tp) + ": " + path + " has " + std::to_string(size) + " " + what +
                     (parts > 1 ? " in " + std::to_string(parts) + " blocks" : "") +
                     ", not divisible by tp: every tp rank must hold an equal share");
}

// The tp form of a linear, plain or LoRA (`lora` set), recording its shards in `plan`: the weight
// split as the family's tp_rule says, and of a LoRA layer's adapters B on a column-parallel base (by the base's
// groups), A on a row-parallel one; the other adapter is replicated.
Layer parallel_linear(const std::string& path, const DenseLinearImpl* dense, const LoraLinearImpl* lora,
                      const Family& family, parallel::Comm& tp, std::shared_ptr<parallel::SharedCopyTo>& copy,
                      TensorParallel& plan) {
  const std::string leaf = path.substr(path.rfind('.') + 1);
  const torch::Tensor& weight = lora ? lora->weight : dense->weight;
  const bool has_bias = (lora ? lora->bias : dense->bias).defined();
  const TpRule rule = family.tp_rule(leaf);
  if (rule.split == TpSplit::column) {
    const int64_t groups = rule.groups;
    check_divides(path, "output features", weight.size(0), groups, tp.size());
    if (!copy) copy = std::make_shared<parallel::SharedCopyTo>();
    plan.shards[path + ".weight"] = {0, groups};
    if (has_bias) plan.shards[path + ".bias"] = {0, groups};
    if (!lora) return std::make_shared<ColumnParallelLinearImpl>(*dense, tp, groups, copy);
    plan.shards[path + ".lora_B.weight"] = {0, groups};
    return std::make_shared<ColumnParallelLoraImpl>(*lora, tp, groups, copy);
  }
  if (rule.split == TpSplit::row) {
    check_divides(path, "input features", weight.size(1), 1, tp.size());
    plan.shards[path + ".weight"] = {1, 1};
    if (!lora) return std::make_shared<RowParallelLinearImpl>(*dense, tp);
    plan.shards[path + ".lora_A.weight"] = {1, 1};
    return std::make_shared<RowParallelLoraImpl>(*lora, tp);
  }
  throw InputError("parallel.tp: no tensor-parallel rule for layer " + path);
}

}  // namespace

std::shared_ptr<TensorParallel> parallelize(CausalLMImpl& model, parallel::Grid& grid) {
  auto plan = std::make_shared<TensorParallel>(grid.tp());
  parallel::Comm& tp = grid.tp();
  if (tp.size() == 1) return plan;
  std::shared_ptr<VocabParallelEmbeddingImpl> embedding;
  std::string tied_head;
  std::map<std::string, std::shared_ptr<parallel::SharedCopyTo>> copies;  // by parent module: q/k/v, gate/up
  for (const auto& [path, layer] : named_layers(model)) {
    const auto dot = path.rfind('.');
    const std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
    Layer replacement;
    auto* lora = dynamic_cast<LoraLinearImpl*>(layer.get());
    auto* dense = dynamic_cast<DenseLinearImpl*>(layer.get());
    if (lora || dense) {
      replacement = parallel_linear(path, dense, lora, model.family(), tp, copies[parent], *plan);
    } else if (auto table = std::dynamic_pointer_cast<TokenEmbeddingImpl>(layer)) {
      check_divides(path, "vocabulary rows", table->weight.size(0), 1, tp.size());
      replacement = embedding = std::make_shared<VocabParallelEmbeddingImpl>(*table, tp);
      plan->shards[path + ".weight"] = {0, 1};
    } else if (std::dynamic_pointer_cast<TiedHeadImpl>(layer)) {
      tied_head = path;  // replaced once the embedding it shares is
      continue;
    } else {
      throw InputError("parallel.tp: layer " + path + " is of a kind tensor parallelism cannot split");
    }
    replace_layer(model, path, replacement);
  }
  if (!tied_head.empty())
    replace_layer(model, tied_head, std::make_shared<VocabParallelTiedHeadImpl>(embedding->weight, tp));
  for (const auto& item : model.named_parameters()) {  // "model.layers.0.self_attn.q_norm.weight": leaf q_norm
    const std::string& name = item.key();
    const std::string module = name.substr(0, name.rfind('.') == std::string::npos ? 0 : name.rfind('.'));
    const std::string leaf = module.substr(module.rfind('.') + 1);  // npos + 1: the whole name
    if (!plan->spec_of(name) && model.family().tp_rule(leaf).split == TpSplit::heads) plan->head_summed.insert(name);
  }
  return plan;
}

std::vector<std::pair<std::string, std::string>> tp_layout_errors(const ModelConfig& m, int64_t tp) {
  std::vector<std::pair<std::string, std::string>> errors;
  if (tp <= 1) return errors;
  auto check = [&](const std::string& key, const std::string& what, int64_t value) {
    if (value % tp != 0)
      errors.emplace_back(key, "model." + key + " " + std::to_string(value) + " (" + what + ") is not divisible by parallel.tp " +
                                   std::to_string(tp) + ": every tp rank must hold an equal share");
  };
  check("n_heads", "attention heads", m.n_heads);
  check("n_kv_heads", "key/value heads", m.kv_heads());
  check("intermediate_size", "MLP width", m.ffn_size());
  check("vocab_size", "vocabulary rows", m.vocab_size);
  // A fused qkv_proj splits as three equal blocks: q, k and v must be as wide.
  bool fused = false;  // an unknown arch is the arch key's error, reported elsewhere
  for (const Family* f : families()) fused = fused || (f->arch == m.arch && f->decoder.fused_projections);
  if (fused && m.kv_heads() != m.n_heads)
    errors.emplace_back("n_kv_heads", "model.n_kv_heads " + std::to_string(m.kv_heads()) + " with n_heads " +
                                          std::to_string(m.n_heads) + ": a fused qkv_proj with grouped-query attention "
                                          "does not split under parallel.tp yet (n_kv_heads = n_heads does)");
  return errors;
}

}  // namespace lmforge::trainer
