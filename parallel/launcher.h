// parallel/launcher.h -- who started us (single process, OpenMPI, Slurm), our rank, and how
// many CPU threads each rank gets. Communicators are comm.h's, the dp x tp grid grid.h's.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lmforge::config {
class Section;
}

namespace lmforge::parallel {

enum class Backend { automatic, mpi, nccl };         // parallel.backend: auto | mpi | nccl
enum class DeviceRequest { automatic, cpu, cuda };  // train.device: auto | cpu | cuda
const char* backend_name(Backend b);                 // as the config spells it

struct ParallelConfig {
  int64_t threads = 0;        // CPU threads per rank; 0 (auto): cores per node / ranks per node
  int64_t dp = 0;             // data-parallel ranks; 0 (`auto`): world size / tp
  int64_t tp = 1;             // tensor-parallel ranks; 1: plain data parallelism, which needs no per-layer
                              // collectives and is fastest whenever the model fits on one device
  Backend backend = Backend::automatic;  // auto: nccl for CUDA devices, mpi otherwise
  double bucket_mb = 25.0;    // gradient bucket size: DDP's default, big enough to amortise latency
  int64_t zero = 0;           // 1: shard AdamW's state across data-parallel ranks (ZeRO stage 1)
  double timeout_s = 600;     // a collective waiting longer aborts the job: a hung rank must not hang all
};
void read_parallel_config(config::Section& s, ParallelConfig& c);

struct DeviceChoice {
  bool cuda = false;
  int index = 0;  // the CUDA device: local rank modulo the devices this node has
};
// `requested` is train.device: auto (CUDA when LibTorch sees a GPU) | cpu | cuda; local_rank of
// local_size ranks on this node. Throws InputError when cuda is asked for and LibTorch has no
// CUDA device, and (device_layout_error) when the node's ranks outnumber its GPUs.
DeviceChoice pick_device(DeviceRequest requested, int local_rank, int local_size);
// Why `local_size` ranks cannot each have one of `devices` GPUs (NCCL refuses two ranks on one
// device), naming both numbers, CUDA_VISIBLE_DEVICES (`visible`, null when unset) and what to do;
// "" when they fit.
std::string device_layout_error(int local_size, int devices, const char* visible);
// train.device as the config spells it, for TrainConfig's reader.
const std::vector<std::pair<std::string, DeviceRequest>>& device_requests();

struct LaunchEnv {
  std::string launcher = "single";  // single | openmpi | slurm
  int rank = 0, world_size = 1, local_rank = 0, local_size = 1;
};

// Reads OMPI_COMM_WORLD_* or SLURM_* variables; a plain process is rank 0 of 1.
LaunchEnv detect_launch_env();

// Splits this rank's core budget between LibTorch's intra-op (OpenMP) pool and OpenBLAS's own
// pool: both busy at once oversubscribe the cores. fp32 matmuls run in OpenBLAS, so it gets the
// budget; bf16 matmuls run in oneDNN on the OpenMP pool, so that pool gets it. Returns the budget.
int configure_threads(const ParallelConfig& c, const LaunchEnv& env, bool bf16_matmuls);

}  // namespace lmforge::parallel
