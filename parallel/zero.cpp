// parallel/zero.cpp -- flat per-group buffers padded to a multiple of the world size (allocated
// once), shard views, and the reduce-scatter -> local step -> all-gather round. No bucketed overlap.
#include "parallel/zero.h"

#include <cmath>

#include "core/host_sync.h"
#include "parallel/comm.h"
#include "parallel/grad_sync.h"

namespace lmforge::parallel {

struct ZeroOptimizer::Group {
  std::vector<torch::Tensor> params;
  int64_t numel = 0, shard_numel = 0;  // padded total = shard_numel x world
  torch::Tensor shard;                 // (shard_numel) fp32 leaf: this rank's slice of the parameters
  torch::Tensor gradients;             // (shard_numel x world) fp32: the flat gradients reduce-scattered,
                                       // allocated once at the first step (its padding stays zero),
                                       // then the gathered parameters' buffer in step()
  torch::Tensor shard_gradient;        // (shard_numel) fp32: this rank's averaged slice, kept across steps
};

static torch::Tensor flatten_padded(const std::vector<torch::Tensor>& tensors, int64_t padded) {
  auto flat = torch::zeros({padded}, tensors.front().options().dtype(torch::kFloat));
  int64_t offset = 0;
  for (const auto& t : tensors) {
    flat.narrow(0, offset, t.numel()).copy_(t.reshape({-1}));
    offset += t.numel();
  }
  return flat;
}

ZeroOptimizer::ZeroOptimizer(torch::optim::AdamW& layout, Comm& comm) : comm_(comm) {
  const int world = comm.size(), rank = comm.rank();
  std::vector<torch::optim::OptimizerParamGroup> shard_groups;
  for (auto& full : layout.param_groups()) {
    auto g = std::make_unique<Group>();
    g->params = full.params();
    for (const auto& p : g->params) g->numel += p.numel();
    g->shard_numel = (g->numel + world - 1) / world;
    torch::NoGradGuard no_grad;
    g->shard = flatten_padded(g->params, g->shard_numel * world).narrow(0, rank * g->shard_numel, g->shard_numel).clone();
    g->shard.set_requires_grad(true);
    shard_groups.emplace_back(std::vector<torch::Tensor>{g->shard}, full.options().clone());
    groups_.push_back(std::move(g));
  }
  optimizer_ = std::make_unique<torch::optim::AdamW>(shard_groups, torch::optim::AdamWOptions());
}

ZeroOptimizer::~ZeroOptimizer() = default;

double ZeroOptimizer::reduce_gradients_and_clip(double max_norm) {
  return read_to_host(reduce_gradients_and_clip_on_device(max_norm)).item<double>();
}

torch::Tensor ZeroOptimizer::reduce_gradients_and_clip_on_device(double max_norm) {
  const int world = comm_.size();
  auto sum_sq = torch::zeros({1}, groups_.front()->shard.options().dtype(torch::kDouble));
  for (auto& g : groups_) {
    if (!g->gradients.defined())
      g->gradients = torch::zeros({g->shard_numel * world}, g->shard.options().requires_grad(false));
    int64_t offset = 0;
    for (const auto& p : g->params) {
      auto slot = g->gradients.narrow(0, offset, p.numel());
      if (p.grad().defined()) {
        slot.copy_(p.grad().reshape({-1}));
      } else {
        slot.zero_();  // a parameter this rank's graph did not reach contributes zero
      }
      offset += p.numel();
    }
    comm_.reduce_scatter_async(g->gradients, g->shard_gradient, ReduceOp::avg)->wait();
    sum_sq += g->shard_gradient.to(torch::kDouble).pow(2).sum();
    g->shard.mutable_grad() = g->shard_gradient;
  }
  comm_.allreduce(sum_sq, ReduceOp::sum);
  auto norm = sum_sq[0].sqrt();
  std::vector<torch::Tensor> shard_grads;
  for (auto& g : groups_) shard_grads.push_back(g->shard.mutable_grad());
  clip_to_norm(shard_grads, norm, max_norm);  // the same coefficient clip_gradients applies
  return norm;
}

void ZeroOptimizer::step() {
  optimizer_->step();
  torch::NoGradGuard no_grad;
  for (auto& g : groups_) {
    // Into the flat gradient buffer: it is refilled before it is read again, so no full-size
    // buffer is allocated per step. (shard_numel x world)
    torch::Tensor& full = g->gradients;
    comm_.allgather_async(g->shard.detach(), full)->wait();
    int64_t offset = 0;
    for (auto& p : g->params) {
      p.copy_(full.narrow(0, offset, p.numel()).view(p.sizes()));
      offset += p.numel();
    }
  }
}

int64_t ZeroOptimizer::local_state_elements() const {
  int64_t n = 0;
  for (const auto& g : groups_) n += g->shard_numel;
  return n;
}

}  // namespace lmforge::parallel
