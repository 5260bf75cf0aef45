// data/ordered_pool.h -- a fixed set of threads running jobs whose results are taken back in the
// order the jobs were submitted, whatever order they finish in. What a job computes is the caller's.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace lmforge::data {

template <class Result>
class OrderedPool {
 public:
  // threads 0: each job runs inside submit, on the caller's thread.
  explicit OrderedPool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  // Jobs not yet started are dropped; running ones finish first.
  ~OrderedPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      queue_.clear();
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  OrderedPool(const OrderedPool&) = delete;
  OrderedPool& operator=(const OrderedPool&) = delete;

  void submit(std::function<Result()> job) {
    std::packaged_task<Result()> task(std::move(job));
    results_.push_back(task.get_future());
    if (threads_.empty()) {
      task();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(task));
    }
    wake_.notify_one();
  }
  size_t pending() const { return results_.size(); }  // submitted, not yet taken
  // The oldest pending job's result, waiting for it; its exception is rethrown here.
  Result take() {
    auto f = std::move(results_.front());
    results_.pop_front();
    return f.get();
  }

 private:
  void work() {
    for (;;) {
      std::packaged_task<Result()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }
  std::deque<std::future<Result>> results_;  // the caller's thread only
  std::deque<std::packaged_task<Result()>> queue_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace lmforge::data
