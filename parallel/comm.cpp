// parallel/comm.cpp -- the self communicator and the MPI backend (OpenMPI). Tensors are
// reduced in place; bf16/f16 travel as fp32 because MPI has no such types.
#include "parallel/comm.h"

#define OMPI_SKIP_MPICXX 1  // the C API only: the deprecated C++ bindings need another library
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <stdexcept>

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
  void allreduce(torch::Tensor&, ReduceOp) override {}
  std::unique_ptr<Work> allreduce_async(torch::Tensor&, ReduceOp) override { return std::make_unique<SelfWork>(); }
  void broadcast(torch::Tensor&, int) override {}
  torch::Tensor allgather(const torch::Tensor& t) override { return t.clone(); }
  torch::Tensor reduce_scatter(const torch::Tensor& t, ReduceOp) override { return t.clone(); }
  void barrier() override {}
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
    // Spin briefly for latency, then back off so waiting ranks leave the cores to working ones.
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

class MpiWork : public Work {
 public:
  MpiWork(MPI_Request req, torch::Tensor target, torch::Tensor staging, ReduceOp op, int size, double timeout_s)
      : req_(req), target_(std::move(target)), staging_(std::move(staging)), op_(op), size_(size),
        timeout_s_(timeout_s) {}
  void wait() override {
    if (done_) return;
    wait_or_abort(req_, timeout_s_, "Iallreduce");
    if (op_ == ReduceOp::avg) staging_.div_(size_);
    if (!staging_.is_same(target_)) target_.copy_(staging_);
    done_ = true;
  }
  ~MpiWork() override {
    if (!done_) MPI_Wait(&req_, MPI_STATUS_IGNORE);  // never leave MPI writing into freed memory
  }

 private:
  MPI_Request req_;
  torch::Tensor target_, staging_;
  ReduceOp op_;
  int size_;
  double timeout_s_;
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

  void allreduce(torch::Tensor& t, ReduceOp op) override { allreduce_async(t, op)->wait(); }

  std::unique_ptr<Work> allreduce_async(torch::Tensor& t, ReduceOp op) override {
    check_cpu_contiguous(t);
    torch::Tensor staging = needs_fp32(t) ? t.to(torch::kFloat) : t;
    MPI_Request req;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, staging.data_ptr(), static_cast<int>(staging.numel()),
                             mpi_type(staging.scalar_type()), mpi_op(op), comm_, &req),
              "Iallreduce");
    return std::make_unique<MpiWork>(req, t, staging, op, size_, timeout_s_);
  }

  void broadcast(torch::Tensor& t, int root) override {
    check_cpu_contiguous(t);
    torch::Tensor staging = needs_fp32(t) ? t.to(torch::kFloat) : t;
    MPI_Request req;
    check_mpi(MPI_Ibcast(staging.data_ptr(), static_cast<int>(staging.numel()), mpi_type(staging.scalar_type()), root,
                         comm_, &req),
              "Ibcast");
    wait_or_abort(req, timeout_s_, "Ibcast");
    if (!staging.is_same(t)) t.copy_(staging);
  }

  torch::Tensor allgather(const torch::Tensor& t) override {
    auto in = t.contiguous();
    check_cpu_contiguous(in);
    auto staging = needs_fp32(in) ? in.to(torch::kFloat) : in;
    auto sizes = staging.sizes().vec();
    if (sizes.empty()) sizes.push_back(1);
    sizes[0] *= size_;
    auto out = torch::empty(sizes, staging.options());
    MPI_Request req;
    check_mpi(MPI_Iallgather(staging.data_ptr(), static_cast<int>(staging.numel()), mpi_type(staging.scalar_type()),
                             out.data_ptr(), static_cast<int>(staging.numel()), mpi_type(staging.scalar_type()), comm_,
                             &req),
              "Iallgather");
    wait_or_abort(req, timeout_s_, "Iallgather");
    return out.to(t.scalar_type());
  }

  torch::Tensor reduce_scatter(const torch::Tensor& t, ReduceOp op) override {
    auto in = t.contiguous();
    check_cpu_contiguous(in);
    TORCH_CHECK(in.dim() >= 1 && in.size(0) % size_ == 0, "reduce_scatter: first dimension ", in.size(0),
                " is not divisible by ", size_, " ranks");
    auto staging = needs_fp32(in) ? in.to(torch::kFloat) : in;
    auto sizes = staging.sizes().vec();
    sizes[0] /= size_;
    auto out = torch::empty(sizes, staging.options());
    MPI_Request req;
    check_mpi(MPI_Ireduce_scatter_block(staging.data_ptr(), out.data_ptr(), static_cast<int>(out.numel()),
                                        mpi_type(staging.scalar_type()), mpi_op(op), comm_, &req),
              "Ireduce_scatter_block");
    wait_or_abort(req, timeout_s_, "Ireduce_scatter_block");
    if (op == ReduceOp::avg) out.div_(size_);
    return out.to(t.scalar_type());
  }

  void barrier() override {
    MPI_Request req;
    check_mpi(MPI_Ibarrier(comm_, &req), "Ibarrier");
    wait_or_abort(req, timeout_s_, "Ibarrier");
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

std::string broadcast_string(Comm& comm, const std::string& value, int root) {
  auto length = torch::tensor({static_cast<int64_t>(value.size())}, torch::kLong);
  comm.broadcast(length, root);
  auto bytes = torch::zeros({length.item<int64_t>()}, torch::kByte);
  if (comm.rank() == root) std::memcpy(bytes.data_ptr(), value.data(), value.size());
  comm.broadcast(bytes, root);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

}  // namespace lmforge::parallel
