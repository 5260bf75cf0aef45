// parallel/comm.h -- the communicator interface and its backends' factory: collectives on
// tensors, non-blocking allreduce with a handle, sub-groups. MPI carries CPU tensors, NCCL CUDA ones.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

namespace lmforge::parallel {

enum class ReduceOp { sum, avg, max };

// A collective in flight. wait() returns once the result is in the tensor it was given.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // Blocking collectives: each is its non-blocking variant followed by wait().
  void allreduce(torch::Tensor& t, ReduceOp op);  // in place, contiguous t
  void broadcast(torch::Tensor& t, int root);     // in place
  torch::Tensor allgather(const torch::Tensor& t);  // (N, ...) -> (size * N, ...)
  torch::Tensor reduce_scatter(const torch::Tensor& t, ReduceOp op);  // (size * N, ...) -> (N, ...)
  void barrier();

  // Non-blocking variants: the collective is posted; its result is in `t` (or `out`) once the
  // handle's wait() returns. Handles may be waited on in any order. `out` is filled in place when
  // it is already a contiguous tensor of the result's shape, dtype and device (a buffer kept
  // across steps), and allocated by the call otherwise.
  virtual std::unique_ptr<Work> allreduce_async(torch::Tensor& t, ReduceOp op) = 0;
  virtual std::unique_ptr<Work> broadcast_async(torch::Tensor& t, int root) = 0;
  virtual std::unique_ptr<Work> allgather_async(const torch::Tensor& t, torch::Tensor& out) = 0;
  virtual std::unique_ptr<Work> reduce_scatter_async(const torch::Tensor& t, torch::Tensor& out, ReduceOp op) = 0;
  virtual std::unique_ptr<Work> barrier_async() = 0;
  // Ranks with the same color form a new communicator, ordered by key.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;
  // A collective that has not completed after this long aborts the whole job with a message
  // naming it: a hung or vanished rank must not hang the others.
  virtual void set_timeout(double seconds) {}
};

// Which communicator carries what. A training job has two over the same ranks:
// - the host communicator (MPI, CPU tensors): control-plane agreements, small and once per step
//   or per event: checkpoint write status, preemption signal flags, config hashes, hosts, the
//   logged loss, strings such as the run directory;
// - the device communicator (NCCL on GPUs; the same MPI one on CPUs): tensors that live on the
//   training device: gradients, optimizer shards, tensor-parallel activations and shards, eval sums.
// A host tensor given to the device communicator is a bug that NCCL reports only on a GPU;
// make_device_contract_comm makes a CPU run report it too.

// `out` when it is a contiguous tensor of `sizes` and `options`' dtype and device, else a new one
// assigned to it: the output rule of allgather_async/reduce_scatter_async, for backends.
torch::Tensor& reuse_or_allocate(torch::Tensor& out, c10::IntArrayRef sizes, const torch::TensorOptions& options);

// The communicator of a single process: every collective is the identity.
std::unique_ptr<Comm> make_self_comm();

// MPI_COMM_WORLD (initialising MPI on first use, finalising at exit).
std::unique_ptr<Comm> make_mpi_world_comm();

// Whether this build has the NCCL backend (CUDA and NCCL were found when it was configured).
bool nccl_available();

// A NCCL communicator over the same ranks as `bootstrap` (which carries NCCL's unique id from
// rank 0), using CUDA device `device`. Collectives take contiguous CUDA tensors, run on a
// dedicated stream ordered after LibTorch's, and a watchdog aborts the job after `timeout_s`.
std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, int device, double timeout_s);

// `inner` with NCCL's contract enforced: every collective refuses a tensor that is not on a CUDA
// device, naming the collective and the tensor, as NCCL does. Tests wrap the device communicator
// in it to prove the control plane never reaches it.
std::unique_ptr<Comm> make_device_contract_comm(Comm& inner);

// Runs `work` (a blocking start-up call such as ncclCommInitRank, which has no timeout of its own)
// and ends the process with exit code 1 and a message naming `what` and the timeout when it has
// not returned after `timeout_s`: a rank that never joins must not hang the others. Exceptions
// from `work` pass through.
void run_within(double timeout_s, const std::string& what, const std::function<void()>& work);

// Broadcasts a string from `root` (e.g. the run directory rank 0 created).
std::string broadcast_string(Comm& comm, const std::string& value, int root);

}  // namespace lmforge::parallel
