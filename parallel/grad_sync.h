// parallel/grad_sync.h -- data-parallel gradient averaging: trainable parameters packed into
// buckets whose allreduce starts from autograd hooks as soon as the bucket's gradients are in.
// Only trainable parameters are synced (a LoRA run syncs only its adapters).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace lmforge::parallel {

class Comm;
class Work;

// Scales `grads` in place so their global L2 norm `total` (a 0-dim double tensor on their device)
// becomes max_norm when it exceeds it and is finite; max_norm <= 0 changes nothing. No host read:
// the decision is made on the device (a scale of exactly 1 leaves a gradient bit for bit).
void clip_to_norm(const std::vector<torch::Tensor>& grads, const torch::Tensor& total, double max_norm);

class GradSync {
 public:
  // Buckets of at most `bucket_mb` MiB (a parameter larger than that gets a bucket of its own),
  // filled in reverse registration order: roughly the order backward produces gradients.
  GradSync(torch::nn::Module& model, Comm& comm, double bucket_mb);
  ~GradSync();

  // Call before each micro-step's backward; only a backward begun with sync = true (the last
  // micro-step of an accumulation) communicates.
  void begin_backward(bool sync);
  // After that backward: waits for every bucket and writes the averaged gradients back.
  void finish();
  // Makes every rank's parameters equal to rank 0's.
  void broadcast_parameters();
  size_t num_buckets() const { return buckets_.size(); }

  struct Bucket;  // opaque: defined in grad_sync.cpp
  void on_gradient_ready(size_t bucket, size_t slot);  // called by the hooks

 private:
  void launch(Bucket& b);
  torch::nn::Module& model_;
  Comm& comm_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // keeps hooked nodes alive
  bool sync_ = false;
};

}  // namespace lmforge::parallel
