// data/sampler.cpp -- ShardSampler: seeded per-epoch permutations, rank slices of global batches,
// and the prefetch thread. The shard format and its checks are in shards.cpp.
#include "data/sampler.h"

#include <nlohmann/json.hpp>

#include <random>

#include "data/shards.h"
#include "core/errors.h"

namespace lmforge::data {

ShardSampler::ShardSampler(std::shared_ptr<const ShardSet> rows, uint64_t seed, int prefetch_depth)
    : rows_(std::move(rows)), seed_(seed), depth_(prefetch_depth) {
  if (rows_->rows() == 0) throw InputError("the training split holds no rows: add data or lower data filters");
}

ShardSampler::~ShardSampler() { stop_prefetch(); }

const std::vector<int64_t>& ShardSampler::permutation(int64_t epoch) {
  if (epoch != perm_epoch_) {
    const int64_t n = rows_->rows();
    perm_.resize(n);
    for (int64_t i = 0; i < n; ++i) perm_[i] = i;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = n - 1; i > 0; --i) {  // Fisher-Yates by hand: std::shuffle differs between libraries
      int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(perm_[i], perm_[j]);
    }
    perm_epoch_ = epoch;
  }
  return perm_;
}

std::vector<int64_t> ShardSampler::stream_rows(int64_t start, int64_t count) {
  std::lock_guard<std::mutex> lock(perm_mutex_);
  const int64_t n = rows_->rows();
  std::vector<int64_t> out;
  for (int64_t i = start; i < start + count; ++i) out.push_back(permutation(i / n)[i % n]);
  return out;
}

void ShardSampler::prefetch_loop() {
  for (;;) {
    int64_t pos;
    Request req;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || static_cast<int>(ready_.size()) < depth_; });
      if (stopping_) return;
      pos = next_to_read_;
      req = request_;
    }
    Batch batch;
    try {
      batch = rows_->read(stream_rows(pos + req.first, req.count));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ready_.emplace_back(pos, std::move(batch));
    next_to_read_ = pos + req.global;
    cv_.notify_all();
  }
}

void ShardSampler::stop_prefetch() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  ready_.clear();
  stopping_ = false;
  error_ = nullptr;
}

Batch ShardSampler::next(int64_t global_rows, int64_t first, int64_t count) {
  bool same = worker_.joinable() && request_.global == global_rows && request_.first == first &&
              request_.count == count;
  if (!same) {
    stop_prefetch();
    request_ = {global_rows, first, count};
    next_to_read_ = position_;
    worker_ = std::thread([this] { prefetch_loop(); });
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty()) std::rethrow_exception(error_);
  auto [pos, batch] = std::move(ready_.front());
  ready_.pop_front();
  cv_.notify_all();
  position_ = pos + global_rows;
  return batch;
}

std::string ShardSampler::state() const {
  const int64_t n = rows_->rows();
  return nlohmann::json{{"epoch", position_ / n}, {"position", position_ % n}, {"rows", n}}.dump();
}

void ShardSampler::restore(const std::string& state) {
  stop_prefetch();
  try {
    auto j = nlohmann::json::parse(state);
    if (j.at("rows").get<int64_t>() != rows_->rows())
      throw InputError("sampler state in the checkpoint is for " + std::to_string(j["rows"].get<int64_t>()) +
                       " rows, the dataset has " + std::to_string(rows_->rows()) + " (a different dataset?)");
    position_ = j.at("epoch").get<int64_t>() * rows_->rows() + j.at("position").get<int64_t>();
  } catch (const nlohmann::json::exception&) {
    throw InputError("sampler state in the checkpoint is not a dataset sampler state");
  }
}

}  // namespace lmforge::data
