// data/batch.h -- what the trainer consumes: batches of (inputs, targets, positions), and the
// interface of anything that yields them in a resumable order. Samplers live beside their data.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace lmforge::data {

struct Batch {
  torch::Tensor inputs;     // (B, T) int64
  torch::Tensor targets;    // (B, T) int64; -100 where no loss is taken (prompt tokens, padding)
  torch::Tensor positions;  // (B, T) int64 position within each document, or undefined for 0..T-1
  torch::Tensor segments;   // (B, T) int64 document index within the row, or undefined: attention may
                            // cross documents
};

// An endless, deterministic sequence of global batches.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Rows [first, first + count) of the next global batch of `global_rows` rows: each data-parallel
  // rank asks for its own slice, so ranks read disjoint rows of the same global batch.
  virtual Batch next(int64_t global_rows, int64_t first, int64_t count) = 0;
  // Where the sequence stands, as text, and back: a resumed run draws the batches it would have.
  virtual std::string state() const = 0;
  virtual void restore(const std::string& state) = 0;
};

}  // namespace lmforge::data
