// parallel/launcher.cpp -- launcher environment variables and CPU thread budgeting.
// No MPI calls here: this runs before any communicator exists.
#include "parallel/launcher.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <cstdlib>
#include <thread>

#include "core/config_reader.h"
#include "core/errors.h"

namespace lmforge::parallel {

namespace {
const std::vector<std::pair<std::string, Backend>> kBackends = {
    {"auto", Backend::automatic}, {"mpi", Backend::mpi}, {"nccl", Backend::nccl}};
}  // namespace

void read_parallel_config(config::Section& s, ParallelConfig& c) {
  s.field("threads", c.threads, config::at_least(0));
  std::string dp = c.dp == 0 ? "auto" : std::to_string(c.dp);
  s.field("dp", dp);
  char* end = nullptr;
  long long n = std::strtoll(dp.c_str(), &end, 10);
  if (dp == "auto") {
    c.dp = 0;
  } else if (!dp.empty() && *end == '\0' && n >= 1) {
    c.dp = n;
  } else {
    s.error("dp", "expected a positive integer or auto, got '" + dp + "'");
  }
  s.field("tp", c.tp, config::at_least(1));
  s.choice("backend", c.backend, kBackends);
  s.field("bucket_mb", c.bucket_mb, config::greater_than(0));
  s.field("zero", c.zero, config::between(0, 1));
  s.field("timeout_s", c.timeout_s, config::greater_than(0));
  if (c.zero == 1 && c.tp > 1)
    s.error("zero", "parallel.zero 1 with parallel.tp " + std::to_string(c.tp) +
                        " is not supported: ZeRO-1 shards flat optimizer state, tensor parallelism shards layers");
}

static int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

const char* backend_name(Backend b) {
  for (const auto& [name, backend] : kBackends)
    if (backend == b) return name.c_str();
  return "auto";
}

const std::vector<std::pair<std::string, DeviceRequest>>& device_requests() {
  static const std::vector<std::pair<std::string, DeviceRequest>> requests = {
      {"auto", DeviceRequest::automatic}, {"cpu", DeviceRequest::cpu}, {"cuda", DeviceRequest::cuda}};
  return requests;
}

std::string device_layout_error(int local_size, int devices, const char* visible) {
  if (local_size <= devices) return "";
  return std::to_string(local_size) + " ranks on this node but " + std::to_string(devices) +
         " visible GPU(s) (CUDA_VISIBLE_DEVICES=" + (visible ? "'" + std::string(visible) + "'" : "unset") +
         "): NCCL needs one GPU per rank. Start at most " + std::to_string(devices) +
         " ranks per node, or train on the CPU with train.device: cpu (parallel.backend: mpi or auto)";
}

DeviceChoice pick_device(DeviceRequest requested, int local_rank, int local_size) {
  DeviceChoice d;
  if (requested == DeviceRequest::cpu) return d;
  int count = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (count == 0) {
    if (requested == DeviceRequest::cuda)
      throw InputError("train.device: cuda, but this LibTorch (" TORCH_VERSION ") sees no CUDA device");
    return d;
  }
  std::string layout = device_layout_error(local_size, count, std::getenv("CUDA_VISIBLE_DEVICES"));
  if (!layout.empty()) throw InputError("train.device: " + layout);
  d.cuda = true;
  d.index = local_rank;
  return d;
}

LaunchEnv detect_launch_env() {
  LaunchEnv env;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    env.launcher = "openmpi";
    env.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    env.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    env.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    env.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (std::getenv("SLURM_PROCID") && std::getenv("SLURM_NTASKS")) {
    env.launcher = "slurm";
    env.rank = env_int("SLURM_PROCID", 0);
    env.world_size = env_int("SLURM_NTASKS", 1);
    env.local_rank = env_int("SLURM_LOCALID", 0);
    env.local_size = env_int("SLURM_NTASKS_PER_NODE", env.world_size);
  }
  return env;
}

int configure_threads(const ParallelConfig& c, const LaunchEnv& env, bool bf16_matmuls) {
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int threads = c.threads > 0 ? static_cast<int>(c.threads) : std::max(1, cores / std::max(1, env.local_size));
  // Measured on 2 cores (experiments/bench/RESULTS.md): fp32 with 2+2 threads ran at 0.56x of
  // 1 OpenMP + 2 OpenBLAS; bf16 with 1 OpenMP thread ran at 0.76x of 2 OpenMP + 1 OpenBLAS.
  torch::set_num_threads(bf16_matmuls ? threads : 1);
  // Debian's libopenblas0-pthread keeps its own pool; found at run time since LibTorch links
  // the generic libblas.so.3 that Debian's alternatives point at OpenBLAS.
  using SetThreads = void (*)(int);
  if (auto set_blas = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set_blas(bf16_matmuls ? 1 : threads);
  return threads;
}

}  // namespace lmforge::parallel
