// experiments/bench/allreduce_bench.cpp -- run under mpirun: bus bandwidth of lmforge's bucketed
// gradient allreduce against plain MPI_Allreduce of the same bytes, and the share of gradient
// communication hidden behind backward. Prints one JSON object per line from rank 0.
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "parallel/comm.h"
#include "parallel/grad_sync.h"
#include "trainer/models/model.h"

using namespace lmforge;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Median of `reps` timings of fn(), each started together on every rank (barrier first).
template <typename Fn>
double median_seconds(parallel::Comm& comm, int reps, Fn fn) {
  std::vector<double> times;
  for (int i = 0; i < reps + 1; ++i) {
    comm.barrier();
    auto t = Clock::now();
    fn();
    double s = seconds_since(t);
    if (i > 0) times.push_back(s);  // the first round warms buffers and connections
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// OSU / nccl-tests definition: algbw = bytes / time, busbw = algbw x 2(n-1)/n.
double bus_gbps(double bytes, double seconds, int n) { return bytes / seconds / 1e9 * 2.0 * (n - 1) / n; }

}  // namespace

int main(int argc, char** argv) {
  auto comm = parallel::make_mpi_world_comm();
  torch::set_num_threads(1);
  const int n = comm->size();
  const bool root = comm->rank() == 0;

  // 1. Bus bandwidth: parameters of `elements` floats in 64 tensors, gradients set, then the
  // bucketed sync (copy into buckets, allreduce avg, copy back) against one MPI_Allreduce.
  for (int64_t elements : {int64_t(1) << 18, int64_t(1) << 20, int64_t(1) << 22, int64_t(1) << 24}) {
    torch::nn::Module holder;
    for (int i = 0; i < 64; ++i) {
      auto p = holder.register_parameter("p" + std::to_string(i), torch::zeros({elements / 64}));
      p.mutable_grad() = torch::randn({elements / 64});
    }
    parallel::GradSync sync(holder, *comm, /*bucket_mb=*/25.0);
    double ours = median_seconds(*comm, 5, [&] {
      sync.begin_backward(true);
      sync.finish();  // no backward ran: launches every bucket, waits, writes the averages back
    });
    auto flat = torch::randn({elements});
    double plain = median_seconds(*comm, 5, [&] {
      MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr(), static_cast<int>(elements), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
    double bytes = 4.0 * static_cast<double>(elements);
    if (root)
      std::printf("%s\n", nlohmann::json{{"bench", "busbw"}, {"ranks", n}, {"mb", bytes / 1e6},
                                         {"lmforge_busbw_gbps", bus_gbps(bytes, ours, n)},
                                         {"mpi_busbw_gbps", bus_gbps(bytes, plain, n)}, {"ratio", plain / ours}}
                              .dump()
                              .c_str());
  }

  // 2. Overlap: a small Llama's forward + backward without sync (compute), the bucket
  // allreduces alone (communication), and backward with the hooks launching buckets as they
  // fill (overlapped). Hidden share = (compute + communication - overlapped) / communication.
  torch::manual_seed(1);
  trainer::ModelConfig mc;
  mc.arch = "llama";
  mc.hidden_size = 256;
  mc.n_layers = 4;
  mc.n_heads = 8;
  mc.max_seq_len = 128;
  auto model = trainer::build_model(mc);
  double bucket_mb = argc > 1 ? std::atof(argv[1]) : 1.0;  // small buckets: several per backward
  parallel::GradSync sync(*model, *comm, bucket_mb);
  auto tokens = torch::randint(0, mc.vocab_size, {8, 128});
  auto step = [&](bool communicate) {
    model->zero_grad();
    sync.begin_backward(communicate);
    trainer::causal_lm_loss(model->forward(tokens), tokens).backward();
    sync.finish();
  };
  double compute = median_seconds(*comm, 5, [&] { step(false); });
  double overlapped = median_seconds(*comm, 5, [&] { step(true); });
  double communication = median_seconds(*comm, 5, [&] {
    sync.begin_backward(true);
    sync.finish();
  });
  double hidden = std::clamp((compute + communication - overlapped) / communication, 0.0, 1.0);
  if (root)
    std::printf("%s\n", nlohmann::json{{"bench", "overlap"}, {"ranks", n}, {"parameters", model->num_parameters()},
                                       {"buckets", sync.num_buckets()}, {"bucket_mb", bucket_mb},
                                       {"compute_ms", compute * 1e3}, {"communication_ms", communication * 1e3},
                                       {"overlapped_ms", overlapped * 1e3}, {"hidden_share", hidden}}
                            .dump()
                            .c_str());
  return 0;
}
