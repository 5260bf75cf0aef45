// parallel/zero.h -- ZeRO stage 1: the optimizer state sharded across data-parallel ranks.
// Gradients are reduce-scattered (averaged), each rank steps its shard, parameters all-gathered.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace lmforge::parallel {

class Comm;

class ZeroOptimizer {
 public:
  // Takes the parameter groups (and their options) of `layout`, an AdamW built over the full
  // model, and builds an AdamW over this rank's 1/world slice of each group instead.
  ZeroOptimizer(torch::optim::AdamW& layout, Comm& comm);
  ~ZeroOptimizer();

  // Averages the gradients across ranks into this rank's shards, clips them to `max_norm` (global
  // L2 norm; 0 = no clipping) and returns the norm before clipping.
  double reduce_gradients_and_clip(double max_norm);
  // The same, the norm as a 0-dim double tensor on the device (no host read).
  torch::Tensor reduce_gradients_and_clip_on_device(double max_norm);
  // Steps the local shards and writes the gathered parameters back into the model.
  void step();
  torch::optim::AdamW& optimizer() { return *optimizer_; }
  int64_t local_state_elements() const;  // elements this rank holds per optimizer moment

  struct Group;  // opaque: defined in zero.cpp

 private:
  Comm& comm_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
};

}  // namespace lmforge::parallel
