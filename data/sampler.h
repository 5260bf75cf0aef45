// data/sampler.h -- the resumable, deterministic sampler over a prepared split, with a background
// thread that reads the next batches from HDF5 while the current one trains.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/batch.h"

namespace lmforge::data {

class ShardSet;

// Rows are visited as one endless stream: epoch e is a permutation of all rows shuffled by
// (seed, e); global batch k is stream items [k G, (k + 1) G). The state is (epoch, position) of
// the next item, so a resumed run, on any rank, reads exactly the rows an uninterrupted one would.
class ShardSampler : public BatchSource {
 public:
  ShardSampler(std::shared_ptr<const ShardSet> rows, uint64_t seed, int prefetch_depth = 2);
  ~ShardSampler() override;
  Batch next(int64_t global_rows, int64_t first, int64_t count) override;
  std::string state() const override;  // {"epoch": e, "position": p}
  void restore(const std::string& state) override;
  // The global row indices of stream items [start, start + count): what next() reads.
  std::vector<int64_t> stream_rows(int64_t start, int64_t count);

 private:
  void stop_prefetch();
  void prefetch_loop();
  const std::vector<int64_t>& permutation(int64_t epoch);

  std::shared_ptr<const ShardSet> rows_;
  uint64_t seed_;
  int depth_;
  int64_t position_ = 0;  // stream index of the next global batch's first item
  std::mutex perm_mutex_;
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;

  // Prefetch: batches for stream positions after position_, for the (global, first, count) last asked.
  struct Request {
    int64_t global = 0, first = 0, count = 0;
  } request_;
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::pair<int64_t, Batch>> ready_;  // (stream position, batch)
  int64_t next_to_read_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

}  // namespace lmforge::data
