// data/text_dataset.h -- input file expansion and random windows over a raw token stream (tests and
// benchmarks). Training data goes through data/pipeline.h and data/sampler.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "data/batch.h"

namespace lmforge::data {

// Sorted glob matches of each pattern, in pattern order; no match or an unreadable pattern throws
// InputError naming `config_key`.
std::vector<std::string> expand_patterns(const std::vector<std::string>& patterns, const std::string& config_key);
// A whole file; a directory or an unreadable file throws InputError naming `config_key`.
std::string read_text_file(const std::string& path, const std::string& config_key);

// Seeded random windows over a corpus; the same seed gives the same batches.
// Every rank draws the whole global batch (the same generator steps) and keeps its slice.
class WindowSampler : public BatchSource {
 public:
  WindowSampler(torch::Tensor tokens, int64_t seq_len, uint64_t seed);
  Batch next(int64_t batch_size);
  Batch next(int64_t global_rows, int64_t first, int64_t count) override;
  // The generator's position as text, and back: a resumed run draws the batches it would have.
  std::string state() const override;
  void restore(const std::string& state) override;

 private:
  torch::Tensor tokens_;
  int64_t seq_len_;
  std::mt19937_64 rng_;
};

// Up to `max_batches` batches of consecutive non-overlapping windows from the start: the same
// every call, so evaluations along a run compare.
std::vector<Batch> fixed_batches(const torch::Tensor& tokens, int64_t seq_len, int64_t batch_size,
                                 int64_t max_batches);

}  // namespace lmforge::data
