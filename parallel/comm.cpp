// parallel/comm.cpp -- the self communicator, the MPI backend (OpenMPI), the device-contract
// wrapper and the start-up timeout. Tensors are reduced in place; bf16/f16 travel as fp32 over MPI.
#include "parallel/comm.h"

#define OMPI_SKIP_MPICXX 1  // the C API only: the deprecated C++ bindings need another library
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace lmforge::parallel {

namespace {

class SelfWork : public Work {
 public:
  void wait() override {}
};

class SelfComm : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "self"; }
  std::unique_ptr<Work> allreduce_async(torch::Tensor&, ReduceOp) override { return std::make_unique<SelfWork>(); }
  std::unique_ptr<Work> broadcast_async(torch::Tensor&, int) override { return std::make_unique<SelfWork>(); }
  std::unique_ptr<Work> allgather_async(const torch::Tensor& t, torch::Tensor& out) override {
    auto whole = t.dim() == 0 ? t.reshape({1}) : t;
    reuse_or_allocate(out, whole.sizes(), whole.options()).copy_(whole);
    return std::make_unique<SelfWork>();
  }
  std::unique_ptr<Work> reduce_scatter_async(const torch::Tensor& t, torch::Tensor& out, ReduceOp) override {
    reuse_or_allocate(out, t.sizes(), t.options()).copy_(t);
    return std::make_unique<SelfWork>();
  }
  std::unique_ptr<Work> barrier_async() override { return std::make_unique<SelfWork>(); }
  std::unique_ptr<Comm> split(int, int) override { return std::make_unique<SelfComm>(); }
};

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw std::runtime_error(std::string("MPI ") + what + " failed: " + std::string(msg, len));
  }
}

MPI_Datatype mpi_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return MPI_FLOAT;
    case torch::kDouble: return MPI_DOUBLE;
    case torch::kLong: return MPI_INT64_T;
    case torch::kInt: return MPI_INT32_T;
    case torch::kByte: return MPI_UINT8_T;
    case torch::kChar: return MPI_INT8_T;
    default: throw std::runtime_error(std::string("MPI: no datatype for ") + c10::toString(t));
  }
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

// MPI has no 16-bit floats: reduce those through an fp32 copy.
bool needs_fp32(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf;
}

void check_cpu_contiguous(const torch::Tensor& t) {
  if (!t.device().is_cpu() || !t.is_contiguous())
    throw std::runtime_error("MPI backend needs contiguous CPU tensors (use parallel.backend: nccl for CUDA)");
}

// Polls `req` until it completes; past the deadline, aborts every rank (MPI_Abort) with a
// message: a blocking MPI_Wait would wait forever for a stopped or vanished peer.
void wait_or_abort(MPI_Request& req, double timeout_s, const char* what) {
  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (int polls = 0;; ++polls) {
    int done = 0;
    check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    if (Clock::now() > deadline) {
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      std::fprintf(stderr,
                   "rank %d: MPI %s did not complete within parallel.timeout_s = %g s: another rank is hung or gone; "
                   "aborting the job\n",
                   rank, what, timeout_s);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    // MPI progresses a large collective only inside MPI_Test, so keep polling; past a short spin,
    // yield so that oversubscribed ranks still leave the cores to working ones. (Sleeping 50 us
    // between polls measured 0.07x the bus bandwidth of a blocking MPI_Allreduce at 2 ranks.)
    if (polls > 1000) std::this_thread::yield();
  }
}

// A posted MPI request; wait() polls it against the timeout, then runs `finish` (averaging,
// copying a staging buffer back) once. Destroyed unwaited, it still waits: MPI must never be
// left writing into freed memory.
class MpiWork : public Work {
 public:
  MpiWork(MPI_Request req, double timeout_s, const char* what, std::function<void()> finish)
      : req_(req), timeout_s_(timeout_s), what_(what), finish_(std::move(finish)) {}
  void wait() override {
    if (done_) return;
    wait_or_abort(req_, timeout_s_, what_);
    done_ = true;
    if (finish_) finish_();
  }
  ~MpiWork() override {
    if (!done_) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }

 private:
  MPI_Request req_;
  double timeout_s_;
  const char* what_;
  std::function<void()> finish_;
  bool done_ = false;
};

class MpiComm : public Comm {
 public:
  explicit MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  std::unique_ptr<Work> allreduce_async(torch::Tensor& t, ReduceOp op) override {
    check_cpu_contiguous(t);
    torch::Tensor staging = needs_fp32(t) ? t.to(torch::kFloat) : t;
    MPI_Request req;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, staging.data_ptr(), static_cast<int>(staging.numel()),
                             mpi_type(staging.scalar_type()), mpi_op(op), comm_, &req),
              "Iallreduce");
    return std::make_unique<MpiWork>(req, timeout_s_, "Iallreduce", [t, staging, op, n = size_]() mutable {
      if (op == ReduceOp::avg) staging.div_(n);
      if (!staging.is_same(t)) t.copy_(staging);
    });
  }

  std::unique_ptr<Work> broadcast_async(torch::Tensor& t, int root) override {
    check_cpu_contiguous(t);
    torch::Tensor staging = needs_fp32(t) ? t.to(torch::kFloat) : t;
    MPI_Request req;
    check_mpi(MPI_Ibcast(staging.data_ptr(), static_cast<int>(staging.numel()), mpi_type(staging.scalar_type()), root,
                         comm_, &req),
              "Ibcast");
    return std::make_unique<MpiWork>(req, timeout_s_, "Ibcast", [t, staging]() mutable {
      if (!staging.is_same(t)) t.copy_(staging);
    });
  }

  std::unique_ptr<Work> allgather_async(const torch::Tensor& t, torch::Tensor& out) override {
    auto in = t.contiguous();
    check_cpu_contiguous(in);
    auto staging = needs_fp32(in) ? in.to(torch::kFloat) : in;
    auto sizes = staging.sizes().vec();
    if (sizes.empty()) sizes.push_back(1);
    sizes[0] *= size_;
    reuse_or_allocate(out, sizes, t.options());
    auto gathered = needs_fp32(in) ? torch::empty(sizes, staging.options()) : out;
    MPI_Request req;
    check_mpi(MPI_Iallgather(staging.data_ptr(), static_cast<int>(staging.numel()), mpi_type(staging.scalar_type()),
                             gathered.data_ptr(), static_cast<int>(staging.numel()), mpi_type(staging.scalar_type()),
                             comm_, &req),
              "Iallgather");
    return std::make_unique<MpiWork>(req, timeout_s_, "Iallgather", [staging, gathered, out]() mutable {
      if (!gathered.is_same(out)) out.copy_(gathered);
    });
  }

  std::unique_ptr<Work> reduce_scatter_async(const torch::Tensor& t, torch::Tensor& out, ReduceOp op) override {
    auto in = t.contiguous();
    check_cpu_contiguous(in);
    TORCH_CHECK(in.dim() >= 1 && in.size(0) % size_ == 0, "reduce_scatter: first dimension ", in.size(0),
                " is not divisible by ", size_, " ranks");
    auto staging = needs_fp32(in) ? in.to(torch::kFloat) : in;
    auto sizes = staging.sizes().vec();
    sizes[0] /= size_;
    reuse_or_allocate(out, sizes, t.options());
    auto reduced = needs_fp32(in) ? torch::empty(sizes, staging.options()) : out;
    MPI_Request req;
    check_mpi(MPI_Ireduce_scatter_block(staging.data_ptr(), reduced.data_ptr(), static_cast<int>(reduced.numel()),
                                        mpi_type(staging.scalar_type()), mpi_op(op), comm_, &req),
              "Ireduce_scatter_block");
    return std::make_unique<MpiWork>(req, timeout_s_, "Ireduce_scatter_block",
                                     [staging, reduced, out, op, n = size_]() mutable {
                                       if (op == ReduceOp::avg) reduced.div_(n);
                                       if (!reduced.is_same(out)) out.copy_(reduced);
                                     });
  }

  std::unique_ptr<Work> barrier_async() override {
    MPI_Request req;
    check_mpi(MPI_Ibarrier(comm_, &req), "Ibarrier");
    return std::make_unique<MpiWork>(req, timeout_s_, "Ibarrier", nullptr);
  }
  void set_timeout(double seconds) override { timeout_s_ = seconds; }

  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm sub;
    check_mpi(MPI_Comm_split(comm_, color, key, &sub), "Comm_split");
    auto child = std::make_unique<MpiComm>(sub, true);
    child->set_timeout(timeout_s_);
    return child;
  }

 private:
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
  double timeout_s_ = 600;  // parallel.timeout_s's default until the config is read
};

void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

std::unique_ptr<Comm> make_self_comm() { return std::make_unique<SelfComm>(); }

namespace {

class DeviceContractComm : public Comm {
 public:
  DeviceContractComm(Comm& inner, std::unique_ptr<Comm> owned = nullptr) : inner_(inner), owned_(std::move(owned)) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend() const override { return inner_.backend(); }
  std::unique_ptr<Work> allreduce_async(torch::Tensor& t, ReduceOp op) override {
    check("allreduce", t);
    return inner_.allreduce_async(t, op);
  }
  std::unique_ptr<Work> broadcast_async(torch::Tensor& t, int root) override {
    check("broadcast", t);
    return inner_.broadcast_async(t, root);
  }
  std::unique_ptr<Work> allgather_async(const torch::Tensor& t, torch::Tensor& out) override {
    check("allgather", t);
    return inner_.allgather_async(t, out);
  }
  std::unique_ptr<Work> reduce_scatter_async(const torch::Tensor& t, torch::Tensor& out, ReduceOp op) override {
    check("reduce_scatter", t);
    return inner_.reduce_scatter_async(t, out, op);
  }
  std::unique_ptr<Work> barrier_async() override { return inner_.barrier_async(); }
  std::unique_ptr<Comm> split(int color, int key) override {
    auto sub = inner_.split(color, key);
    Comm& ref = *sub;
    return std::make_unique<DeviceContractComm>(ref, std::move(sub));
  }
  void set_timeout(double seconds) override { inner_.set_timeout(seconds); }

 private:
  static void check(const char* collective, const torch::Tensor& t) {
    if (!t.is_cuda())
      throw std::runtime_error(std::string("device communicator: ") + collective + " of a " +
                               c10::toString(t.scalar_type()) + " " + c10::str(t.sizes()) + " tensor on " +
                               t.device().str() + ": it takes CUDA tensors only (control-plane values go "
                               "through the host communicator, parallel/comm.h)");
  }
  Comm& inner_;
  std::unique_ptr<Comm> owned_;  // set for a sub-communicator
};

}  // namespace

std::unique_ptr<Comm> make_device_contract_comm(Comm& inner) { return std::make_unique<DeviceContractComm>(inner); }

void run_within(double timeout_s, const std::string& what, const std::function<void()>& work) {
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::thread timer([&] {
    std::unique_lock<std::mutex> lock(mutex);
    if (!finished.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return done; })) {
      std::fprintf(stderr, "error: %s did not complete within parallel.timeout_s = %g s: another rank is hung, "
                           "gone, or cannot reach this one; ending the job\n", what.c_str(), timeout_s);
      std::fflush(stderr);
      std::_Exit(1);
    }
  });
  auto finish = [&] {
    {
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
    }
    finished.notify_all();
    timer.join();
  };
  try {
    work();
  } catch (...) {
    finish();
    throw;
  }
  finish();
}

std::unique_ptr<Comm> make_mpi_world_comm() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Gradient buckets are reduced from autograd hooks; MULTIPLE keeps that legal whichever
    // thread the engine runs them on.
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "Init_thread");
    std::atexit(finalize_mpi);
  }
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, false);
}

#ifndef LMFORGE_HAVE_NCCL
bool nccl_available() { return false; }

std::unique_ptr<Comm> make_nccl_comm(Comm&, int, double) {
  throw std::runtime_error("parallel.backend: nccl: this lmforge was built without NCCL (CUDA and NCCL were not "
                           "found when it was configured)");
}
#endif

void Comm::allreduce(torch::Tensor& t, ReduceOp op) { allreduce_async(t, op)->wait(); }
void Comm::broadcast(torch::Tensor& t, int root) { broadcast_async(t, root)->wait(); }
void Comm::barrier() { barrier_async()->wait(); }

torch::Tensor Comm::allgather(const torch::Tensor& t) {
  torch::Tensor out;
  allgather_async(t, out)->wait();
  return out;
}

torch::Tensor& reuse_or_allocate(torch::Tensor& out, c10::IntArrayRef sizes, const torch::TensorOptions& options) {
  bool fits = out.defined() && out.sizes() == sizes && out.scalar_type() == options.dtype().toScalarType() &&
              out.device() == options.device() && out.is_contiguous();
  if (!fits) out = torch::empty(sizes, options);
  return out;
}

torch::Tensor Comm::reduce_scatter(const torch::Tensor& t, ReduceOp op) {
  torch::Tensor out;
  reduce_scatter_async(t, out, op)->wait();
  return out;
}

std::string broadcast_string(Comm& comm, const std::string& value, int root) {
  auto length = torch::tensor({static_cast<int64_t>(value.size())}, torch::kLong);
  comm.broadcast(length, root);
  auto bytes = torch::zeros({length.item<int64_t>()}, torch::kByte);
  if (comm.rank() == root) std::memcpy(bytes.data_ptr(), value.data(), value.size());
  comm.broadcast(bytes, root);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

}  // namespace lmforge::parallel
