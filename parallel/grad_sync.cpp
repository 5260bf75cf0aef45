// parallel/grad_sync.cpp -- bucket layout, the gradient-accumulator post-hooks, and the
// flatten -> allreduce(avg) -> unflatten round trip. Optimizer sharding is not here.
#include "parallel/grad_sync.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "parallel/comm.h"

namespace lmforge::parallel {

struct GradSync::Bucket {
  std::vector<torch::Tensor> params;
  std::vector<int64_t> offsets;  // element offset of each parameter in `flat`
  int64_t numel = 0;             // of all its parameters
  torch::Tensor flat;            // (numel) fp32 on the parameters' device, allocated at the first sync:
                                 // one rank, or ZeRO (which reduce-scatters instead), never needs it
  std::vector<bool> ready;
  size_t num_ready = 0;
  std::unique_ptr<Work> work;
};

namespace {
// Fires after AccumulateGrad has written the parameter's .grad for this backward.
class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradSync* sync, size_t bucket, size_t slot) : sync_(sync), bucket_(bucket), slot_(slot) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    sync_->on_gradient_ready(bucket_, slot_);
    return outputs;
  }

 private:
  GradSync* sync_;
  size_t bucket_, slot_;
};
}  // namespace

GradSync::GradSync(torch::nn::Module& model, Comm& comm, double bucket_mb) : model_(model), comm_(comm) {
  std::vector<torch::Tensor> params;
  for (const auto& p : model.parameters())
    if (p.requires_grad()) params.push_back(p);
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024 / 4));  // fp32 elements
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    if (buckets_.empty() || (buckets_.back()->numel > 0 && buckets_.back()->numel + it->numel() > cap))
      buckets_.push_back(std::make_unique<Bucket>());
    Bucket& b = *buckets_.back();
    b.offsets.push_back(b.numel);
    b.params.push_back(*it);
    b.numel += it->numel();
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = *buckets_[bi];
    b.ready.assign(b.params.size(), false);
    for (size_t slot = 0; slot < b.params.size(); ++slot) {
      auto acc = torch::autograd::impl::grad_accumulator(b.params[slot]);
      acc->add_post_hook(std::make_unique<ReadyHook>(this, bi, slot));
      accumulators_.push_back(std::move(acc));
    }
  }
}

GradSync::~GradSync() = default;

void GradSync::begin_backward(bool sync) {
  sync_ = sync && comm_.size() > 1;
  for (auto& b : buckets_) {
    std::fill(b->ready.begin(), b->ready.end(), false);
    b->num_ready = 0;
    b->work.reset();
  }
}

void GradSync::on_gradient_ready(size_t bucket, size_t slot) {
  if (!sync_) return;
  Bucket& b = *buckets_[bucket];
  if (b.ready[slot]) return;
  b.ready[slot] = true;
  if (++b.num_ready == b.params.size()) launch(b);
}

void GradSync::launch(Bucket& b) {
  if (!b.flat.defined()) b.flat = torch::empty({b.numel}, b.params.front().options().dtype(torch::kFloat));
  for (size_t i = 0; i < b.params.size(); ++i) {
    auto dst = b.flat.narrow(0, b.offsets[i], b.params[i].numel());
    const auto& g = b.params[i].grad();
    if (g.defined()) {
      dst.copy_(g.reshape({-1}));
    } else {
      dst.zero_();  // a parameter this rank's graph did not reach contributes zero
    }
  }
  b.work = comm_.allreduce_async(b.flat, ReduceOp::avg);
}

void GradSync::finish() {
  if (!sync_) return;
  for (auto& b : buckets_) {
    if (!b->work) launch(*b);  // parameters unused this step never fired their hooks
    b->work->wait();
    for (size_t i = 0; i < b->params.size(); ++i) {
      auto& p = b->params[i];
      auto avg = b->flat.narrow(0, b->offsets[i], p.numel()).view(p.sizes());
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      p.mutable_grad().copy_(avg);
    }
    b->work.reset();
  }
  sync_ = false;
}

void clip_to_norm(const std::vector<torch::Tensor>& grads, const torch::Tensor& total, double max_norm) {
  if (max_norm <= 0 || grads.empty()) return;
  auto clipping = total.isfinite().logical_and(total > max_norm);
  auto scale = torch::where(clipping, max_norm / (total + 1e-6), torch::ones_like(total));
  for (const auto& g : grads) g.mul_(scale);
}

void GradSync::broadcast_parameters() {
  if (comm_.size() == 1) return;
  torch::NoGradGuard no_grad;
  for (auto& p : model_.parameters()) {
    auto t = p.detach();
    comm_.broadcast(t, 0);
  }
}

}  // namespace lmforge::parallel
