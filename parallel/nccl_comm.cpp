// parallel/nccl_comm.cpp -- the NCCL backend for CUDA tensors: unique id over the bootstrap
// (MPI) communicator, non-blocking communicators polled against the timeout, one dedicated
// stream, and a watchdog. Compiled only where CUDA + NCCL exist.
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "parallel/comm.h"

#if LMFORGE_HAVE_C10_CUDA  // a CUDA LibTorch (pip's): its current stream and caching allocator
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace lmforge::parallel {

namespace {

// LibTorch's current stream on `device`, where the kernels producing and consuming collective
// buffers run. A LibTorch without CUDA runs no kernels there: the legacy default stream stands in.
cudaStream_t torch_stream(int device) {
#if LMFORGE_HAVE_C10_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return nullptr;
#endif
}

// Tells the caching allocator that `t` is in use on `stream`, so its memory is not handed to
// LibTorch's stream again before the collective there has finished (and wait() need not block).
void record_stream(const torch::Tensor& t, cudaStream_t stream, int device) {
#if LMFORGE_HAVE_C10_CUDA
  c10::cuda::CUDACachingAllocator::recordStream(
      t.storage().data_ptr(), c10::cuda::getStreamFromExternal(stream, static_cast<c10::DeviceIndex>(device)));
#else
  (void)t, (void)stream, (void)device;
#endif
}

void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw std::runtime_error(std::string("CUDA ") + what + " failed: " + cudaGetErrorString(rc));
}

void check_nccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw std::runtime_error(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(rc));
}

// Communicators are created non-blocking (NCCL >= 2.14; older ones block, bounded by run_within's
// timer): init, split and enqueuing a collective
// may return ncclInProgress, and the host polls the communicator's state until it settles, so a
// peer that never joins ends the job after the timeout instead of hanging it (the watchdog polls
// the same state for collectives already on the GPU).
// The result of a call on `comm` once it is no longer in progress; after `timeout_s` the
// communicator is aborted and the job ends with a message naming `what` (collectives are
// enqueued in microseconds, so the poll yields before it sleeps).
void settle(ncclComm_t comm, ncclResult_t rc, double timeout_s, const std::string& what, int rank) {
  const auto start = std::chrono::steady_clock::now();
  for (int polls = 0; rc == ncclInProgress; ++polls) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s) {
      std::fprintf(stderr, "error: %s (rank %d) did not complete within parallel.timeout_s = %g s: another rank is hung, "
                           "gone, or cannot reach this one; ending the job\n", what.c_str(), rank, timeout_s);
      std::fflush(stderr);
      ncclCommAbort(comm);
      std::_Exit(1);
    }
    if (polls < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (ncclCommGetAsyncError(comm, &rc) != ncclSuccess) break;
  }
  check_nccl(rc, what.c_str());
}

#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
ncclConfig_t non_blocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}
#endif

ncclDataType_t nccl_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kLong: return ncclInt64;
    case torch::kInt: return ncclInt32;
    case torch::kByte: return ncclUint8;
    case torch::kChar: return ncclInt8;
    default: throw std::runtime_error(std::string("NCCL: no datatype for ") + c10::toString(t));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
  }
  return ncclSum;
}

void check_cuda_contiguous(const torch::Tensor& t) {
  if (!t.device().is_cuda() || !t.is_contiguous())
    throw std::runtime_error("NCCL backend needs contiguous CUDA tensors (use parallel.backend: mpi for CPU)");
}

// Owns the NCCL communicator and its stream; a watchdog thread polls the async error state and
// the completion events of collectives in flight. On an async error, or a collective older than
// the timeout, it aborts the communicator (ncclCommDestroy could block forever) and ends the
// process with a message: the job must not hang on a dead or stuck peer.
class NcclState {
 public:
  NcclState(ncclComm_t comm, int device, int rank, double timeout_s)
      : comm_(comm), device_(device), rank_(rank), timeout_s_(timeout_s) {
    check_cuda(cudaSetDevice(device_), "SetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "StreamCreate");
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclState() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    watchdog_.join();
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  ncclComm_t comm() const { return comm_; }
  // Checks the result of posting a collective on the communicator (settled if in progress).
  void enqueued(ncclResult_t rc, const char* what) { settle(comm_, rc, timeout_s_, std::string("NCCL ") + what, rank_); }
  cudaStream_t stream() const { return stream_; }
  void set_timeout(double s) { timeout_s_ = s; }
  double timeout() const { return timeout_s_; }

  // Orders the collective after all work already queued on LibTorch's current stream by waiting
  // on an event recorded there.
  void begin() {
    cudaEvent_t ready;
    check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "EventCreate");
    check_cuda(cudaEventRecord(ready, torch_stream(device_)), "EventRecord");
    check_cuda(cudaStreamWaitEvent(stream_, ready, 0), "StreamWaitEvent");
    cudaEventDestroy(ready);
  }

  // Records completion on our stream, makes LibTorch's stream wait for it (so later kernels and
  // the caching allocator see the result) and hands the event to the watchdog.
  cudaEvent_t end(const char* what, const std::vector<torch::Tensor>& buffers) {
    for (const auto& t : buffers) record_stream(t, stream_, device_);
    cudaEvent_t done;
    check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "EventCreate");
    check_cuda(cudaEventRecord(done, stream_), "EventRecord");
    check_cuda(cudaStreamWaitEvent(torch_stream(device_), done, 0), "StreamWaitEvent");
    cudaEvent_t watched;
    check_cuda(cudaEventCreateWithFlags(&watched, cudaEventDisableTiming), "EventCreate");
    check_cuda(cudaEventRecord(watched, stream_), "EventRecord");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending_.push_back({watched, std::chrono::steady_clock::now(), what});
    }
    return done;
  }

 private:
  struct Pending {
    cudaEvent_t event;
    std::chrono::steady_clock::time_point start;
    const char* what;
  };

  [[noreturn]] void fail(const std::string& message) {
    std::fprintf(stderr, "rank %d: NCCL %s; aborting the communicator and the job\n", rank_, message.c_str());
    std::fflush(stderr);
    ncclCommAbort(comm_);
    std::_Exit(1);
  }

  void watch() {
    cudaSetDevice(device_);
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, std::chrono::milliseconds(100));
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
        fail(std::string("asynchronous error: ") + ncclGetErrorString(async));
      auto now = std::chrono::steady_clock::now();
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (cudaEventQuery(it->event) == cudaSuccess) {
          cudaEventDestroy(it->event);
          it = pending_.erase(it);
          continue;
        }
        if (std::chrono::duration<double>(now - it->start).count() > timeout_s_)
          fail(std::string(it->what) + " did not complete within parallel.timeout_s = " + std::to_string(timeout_s_) +
               " s: another rank is hung or gone");
        ++it;
      }
    }
  }

  ncclComm_t comm_;
  int device_, rank_;
  std::atomic<double> timeout_s_;
  cudaStream_t stream_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::list<Pending> pending_;
  bool stopping_ = false;
  std::thread watchdog_;
};

class NcclWork : public Work {
 public:
  NcclWork(cudaEvent_t done, std::vector<torch::Tensor> keep_alive)
      : done_(done), keep_alive_(std::move(keep_alive)) {}
  // LibTorch's stream already waits for the collective (see NcclState::end), so results are
  // ordered for every later kernel, and a host read of them (.cpu(), .item()) waits too. With a
  // CUDA LibTorch the caching allocator also knows the buffers are in use on NCCL's stream
  // (record_stream), so wait() does not block the host (tensor-parallel collectives cost no host
  // synchronisation); without it, wait() blocks until the collective is done, as the MPI handle does.
  // A collective that never finishes is the watchdog's either way.
  void wait() override {
    if (!done_) return;
#if !LMFORGE_HAVE_C10_CUDA
    check_cuda(cudaEventSynchronize(done_), "EventSynchronize");
#endif
    cudaEventDestroy(done_);  // a pending event is released once it completes
    done_ = nullptr;
    keep_alive_.clear();
  }
  ~NcclWork() override {
    if (done_) wait();
  }

 private:
  cudaEvent_t done_;
  std::vector<torch::Tensor> keep_alive_;
};

std::unique_ptr<Work> make_work(cudaEvent_t done, std::vector<torch::Tensor> buffers) {
  return std::make_unique<NcclWork>(done, std::move(buffers));
}

class NcclComm : public Comm {
 public:
  NcclComm(std::shared_ptr<NcclState> state, int rank, int size) : state_(std::move(state)), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  std::unique_ptr<Work> allreduce_async(torch::Tensor& t, ReduceOp op) override {
    check_cuda_contiguous(t);
    state_->begin();
    state_->enqueued(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.scalar_type()),
                             nccl_op(op), state_->comm(), state_->stream()),
               "AllReduce");
    return make_work(state_->end("AllReduce", {t}), {t});
  }

  std::unique_ptr<Work> broadcast_async(torch::Tensor& t, int root) override {
    check_cuda_contiguous(t);
    state_->begin();
    state_->enqueued(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.scalar_type()),
                             root, state_->comm(), state_->stream()),
               "Broadcast");
    return make_work(state_->end("Broadcast", {t}), {t});
  }

  std::unique_ptr<Work> allgather_async(const torch::Tensor& t, torch::Tensor& out) override {
    auto in = t.contiguous();
    check_cuda_contiguous(in);
    auto sizes = in.sizes().vec();
    if (sizes.empty()) sizes.push_back(1);
    sizes[0] *= size_;
    reuse_or_allocate(out, sizes, in.options());
    state_->begin();
    state_->enqueued(ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()),
                             nccl_type(in.scalar_type()), state_->comm(), state_->stream()),
               "AllGather");
    return make_work(state_->end("AllGather", {in, out}), {in, out});
  }

  std::unique_ptr<Work> reduce_scatter_async(const torch::Tensor& t, torch::Tensor& out, ReduceOp op) override {
    auto in = t.contiguous();
    check_cuda_contiguous(in);
    TORCH_CHECK(in.dim() >= 1 && in.size(0) % size_ == 0, "reduce_scatter: first dimension ", in.size(0),
                " is not divisible by ", size_, " ranks");
    auto sizes = in.sizes().vec();
    sizes[0] /= size_;
    reuse_or_allocate(out, sizes, in.options());
    state_->begin();
    state_->enqueued(ncclReduceScatter(in.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()),
                                 nccl_type(in.scalar_type()), nccl_op(op), state_->comm(), state_->stream()),
               "ReduceScatter");
    return make_work(state_->end("ReduceScatter", {in, out}), {in, out});
  }

  // NCCL has no barrier: a one-element allreduce that every rank must join.
  std::unique_ptr<Work> barrier_async() override {
    auto token = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA, device()));
    return allreduce_async(token, ReduceOp::sum);
  }

  void set_timeout(double seconds) override { state_->set_timeout(seconds); }

  std::unique_ptr<Comm> split(int color, int key) override {
    ncclComm_t sub = nullptr;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
    ncclConfig_t config = non_blocking_config();
    state_->enqueued(ncclCommSplit(state_->comm(), color, key, &sub, &config), "CommSplit");  // the parent settles
    settle(sub, ncclInProgress, state_->timeout(), "NCCL CommSplit", rank_);                  // then the child
#else
    run_within(state_->timeout(), "NCCL CommSplit (rank " + std::to_string(rank_) + ")",
               [&] { check_nccl(ncclCommSplit(state_->comm(), color, key, &sub, nullptr), "CommSplit"); });
#endif
    int rank = 0, size = 0;
    check_nccl(ncclCommUserRank(sub, &rank), "CommUserRank");
    check_nccl(ncclCommCount(sub, &size), "CommCount");
    return std::make_unique<NcclComm>(std::make_shared<NcclState>(sub, device(), rank, state_->timeout()), rank, size);
  }

 private:
  int device() const {
    int d = 0;
    cudaGetDevice(&d);
    return d;
  }
  std::shared_ptr<NcclState> state_;
  int rank_, size_;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, int device, double timeout_s) {
  check_cuda(cudaSetDevice(device), "SetDevice");
  ncclUniqueId id;
  if (bootstrap.rank() == 0) check_nccl(ncclGetUniqueId(&id), "GetUniqueId");
  auto bytes = torch::from_blob(&id, {static_cast<int64_t>(sizeof id)}, torch::kByte).clone();
  bootstrap.broadcast(bytes, 0);
  std::memcpy(&id, bytes.data_ptr(), sizeof id);
  ncclComm_t comm = nullptr;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
  ncclConfig_t config = non_blocking_config();
  ncclResult_t rc = ncclCommInitRankConfig(&comm, bootstrap.size(), id, bootstrap.rank(), &config);
  if (rc != ncclSuccess && rc != ncclInProgress) check_nccl(rc, "CommInitRankConfig");
  settle(comm, ncclInProgress, timeout_s, "NCCL CommInitRank", bootstrap.rank());
#else
  run_within(timeout_s, "NCCL CommInitRank (rank " + std::to_string(bootstrap.rank()) + ")",
             [&] { check_nccl(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()), "CommInitRank"); });
#endif
  return std::make_unique<NcclComm>(std::make_shared<NcclState>(comm, device, bootstrap.rank(), timeout_s),
                                    bootstrap.rank(), bootstrap.size());
}

}  // namespace lmforge::parallel
