// parallel/tensor_parallel.cpp -- the tp autograd primitives, shard slicing and gathering, and the
// vocab-parallel loss. The layers built on them are trainer/tp_layers.cpp's.
#include "parallel/tensor_parallel.h"

#include <cmath>


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

torch::Tensor dropout_of_slice(const torch::Tensor& x, double p, bool training, Comm& tp) {
  if (!training || p == 0) return x;
  auto sizes = x.sizes().vec();
  sizes.back() *= tp.size();
  auto noise = torch::empty(sizes, x.options()).bernoulli_(1 - p).div_(1 - p);
  return x * own_slice_last_dim(noise, tp);
}

torch::Tensor vocab_parallel_cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets, Comm& tp) {
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
  return ((sum_exp.log() - target_logit) * valid).sum();
}

}  // namespace lmforge::parallel
