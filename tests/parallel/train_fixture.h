// tests/parallel/train_fixture.h -- tiny models trained by the real Trainer over a given
// communicator, for parity tests between layouts (1 rank vs N, plain vs ZeRO-1, batch splits).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "parallel/comm.h"
#include "trainer/trainer.h"

namespace lmforge::testing {

struct TrainedModel {
  trainer::CausalLM model;
  std::vector<double> losses;
};

// The fixtures' loop: rows of 16 tokens, `micro_batch` per micro-step, `accum` micro-steps, lr 3e-3.
inline trainer::TrainerSettings tiny_settings(int64_t steps, int64_t micro_batch, int64_t accum) {
  trainer::TrainerSettings s;
  s.train.max_steps = steps;
  s.train.micro_batch_size = micro_batch;
  s.train.grad_accum_steps = accum;
  s.train.seq_len = 16;
  s.train.log_every = 1000;
  s.optim.lr = 3e-3;
  return s;
}

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
  trainer::TrainerSettings s = tiny_settings(steps, micro_batch, accum);
  s.optim.grad_clip = 0.5;  // low enough to clip: exercises the global norm across ranks/shards
  s.zero = zero;
  auto tokens = torch::randint(0, 30, {2000}, at::detail::createCPUGenerator(4), torch::kLong);
  trainer::Trainer t(model, s, data::WindowSampler(tokens, 16, 5), torch::Tensor(), nullptr, comm);
  t.run();
  return {model, t.losses()};
}

// Instruction-style rows: 64 fixed rows of 16 tokens whose first p targets are masked (-100), p
// drawn per row from 0..16, so rows hold 0 to 16 targets and some only prompt tokens. Global
// batch k is rows 16k.. (mod 64) whatever the split; `all_masked` masks every target.
class MaskedRows : public data::BatchSource {
 public:
  explicit MaskedRows(bool all_masked = false) {
    auto tokens = torch::randint(0, 30, {64, 17}, at::detail::createCPUGenerator(12), torch::kLong);
    inputs_ = tokens.narrow(1, 0, 16).contiguous();
    targets_ = tokens.narrow(1, 1, 16).clone();
    uint32_t state = 5;
    for (int64_t r = 0; r < 64; ++r) {
      state = state * 1664525u + 1013904223u;
      int64_t prompt = r % 7 == 3 ? 16 : static_cast<int64_t>((state >> 16) % 17);  // every 7th row: prompt only
      if (all_masked) prompt = 16;
      targets_[r].narrow(0, 0, prompt).fill_(-100);
    }
  }
  data::Batch next(int64_t global_rows, int64_t first, int64_t count) override {
    auto rows = (torch::arange(first, first + count, torch::kLong) + batches_ * global_rows) % 64;
    ++batches_;
    return {inputs_.index_select(0, rows), targets_.index_select(0, rows), {}, {}};
  }
  std::string state() const override { return std::to_string(batches_); }
  void restore(const std::string& state) override { batches_ = std::stoll(state); }

 private:
  torch::Tensor inputs_, targets_;
  int64_t batches_ = 0;
};

// A tiny llama trained in fp32 on MaskedRows: `micro_batch` rows per rank per micro-step, `accum`
// micro-steps (global batch micro_batch x accum x comm.size()).
inline TrainedModel train_masked_llama(parallel::Comm& comm, int64_t steps, int64_t micro_batch, int64_t accum,
                                       bool all_masked = false) {
  torch::manual_seed(9);
  trainer::ModelConfig mc;
  mc.arch = "llama";
  mc.vocab_size = 30;
  mc.hidden_size = 24;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.n_kv_heads = 2;
  mc.max_seq_len = 16;
  auto model = trainer::build_model(mc);
  trainer::Trainer t(model, tiny_settings(steps, micro_batch, accum), std::make_unique<MaskedRows>(all_masked), {}, nullptr, comm);
  t.run();
  return {model, t.losses()};
}

// ||a - b|| / ||b|| over all parameters of two models of the same shape taken as one vector.
inline double relative_parameter_difference(const trainer::CausalLM& a, const trainer::CausalLM& b) {
  auto pb = b->named_parameters();
  double diff = 0, norm = 0;
  for (const auto& p : a->named_parameters()) {
    diff += (p.value() - pb[p.key()]).pow(2).sum().item<double>();
    norm += pb[p.key()].pow(2).sum().item<double>();
  }
  return std::sqrt(diff / norm);
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
