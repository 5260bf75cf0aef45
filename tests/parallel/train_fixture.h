// tests/parallel/train_fixture.h -- a tiny GPT-2 trained by the real Trainer over a given
// communicator, for parity tests between layouts (1 rank vs N, plain vs ZeRO-1).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "parallel/comm.h"
#include "trainer/trainer.h"

namespace lmforge::testing {

struct TrainedModel {
  trainer::CausalLM model;
  std::vector<double> losses;
};

// `micro_batch` sequences per rank per micro-step, `accum` micro-steps: the global batch is
// micro_batch x accum x comm.size(). Same seeds everywhere, so layouts with equal global
// batches train the same model.
inline TrainedModel train_tiny_gpt2(parallel::Comm& comm, int64_t steps, int64_t micro_batch, int64_t accum,
                                    bool zero = false) {
  torch::manual_seed(9);
  trainer::ModelConfig mc;
  mc.arch = "gpt2";  // biases and LayerNorms: both decay groups are non-empty
  mc.vocab_size = 30;
  mc.hidden_size = 24;
  mc.n_layers = 2;
  mc.n_heads = 3;
  mc.max_seq_len = 16;
  auto model = trainer::build_model(mc);
  trainer::TrainerSettings s;
  s.train.max_steps = steps;
  s.train.micro_batch_size = micro_batch;
  s.train.grad_accum_steps = accum;
  s.train.seq_len = 16;
  s.train.log_every = 1000;
  s.optim.lr = 3e-3;
  s.optim.grad_clip = 0.5;  // low enough to clip: exercises the global norm across ranks/shards
  s.zero = zero;
  auto tokens = torch::randint(0, 30, {2000}, at::detail::createCPUGenerator(4), torch::kLong);
  trainer::Trainer t(model, s, data::WindowSampler(tokens, 16, 5), torch::Tensor(), nullptr, comm);
  t.run();
  return {model, t.losses()};
}

// Largest absolute difference over all parameters of two models of the same shape.
inline double max_parameter_difference(const trainer::CausalLM& a, const trainer::CausalLM& b) {
  auto pb = b->named_parameters();
  double worst = 0;
  for (const auto& p : a->named_parameters())
    worst = std::max(worst, (p.value() - pb[p.key()]).abs().max().item<double>());
  return worst;
}

}  // namespace lmforge::testing
