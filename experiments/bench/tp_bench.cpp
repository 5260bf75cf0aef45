// experiments/bench/tp_bench.cpp -- run under mpirun -np N (N = 1, 2, 4): a llama trained at
// tp = N; tensor-parallel communication per step, counted on the tp communicator, against the
// Megatron theory (per layer two allreduces of B*T*H forward, two backward), and step time.
// With the argument `lora`, the same model with r = 8 LoRA adapters on every linear, the base
// frozen (adapters sharded with their base layers). Prints one JSON object from rank 0; run it
// through tp_bench.sh for the tp2 / tp1 ratios. Results: experiments/bench/RESULTS.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "parallel/comm.h"
#include "parallel/grid.h"
#include "parallel/launcher.h"
#include "parallel/tensor_parallel.h"
#include "trainer/models/model.h"
#include "trainer/optim.h"
#include "trainer/parallelize.h"
#include "trainer/peft/apply.h"
#include "trainer/peft/peft_config.h"

using namespace lmforge;
using Clock = std::chrono::steady_clock;

namespace {

struct Counts {
  int64_t allreduces = 0, allreduce_bytes = 0, other_calls = 0, other_bytes = 0;
};

// Forwards every collective to `inner`, counting calls and bytes; its sub-communicators count too.
class CountingComm : public parallel::Comm {
 public:
  CountingComm(parallel::Comm& inner, std::shared_ptr<Counts> counts, std::unique_ptr<parallel::Comm> owned = nullptr)
      : inner_(inner), counts_(std::move(counts)), owned_(std::move(owned)) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend() const override { return inner_.backend(); }
  std::unique_ptr<parallel::Work> allreduce_async(torch::Tensor& t, parallel::ReduceOp op) override {
    counts_->allreduces += 1;
    counts_->allreduce_bytes += t.numel() * static_cast<int64_t>(t.element_size());
    return inner_.allreduce_async(t, op);
  }
  std::unique_ptr<parallel::Work> broadcast_async(torch::Tensor& t, int root) override {
    other(t);
    return inner_.broadcast_async(t, root);
  }
  std::unique_ptr<parallel::Work> allgather_async(const torch::Tensor& t, torch::Tensor& out) override {
    other(t);
    return inner_.allgather_async(t, out);
  }
  std::unique_ptr<parallel::Work> reduce_scatter_async(const torch::Tensor& t, torch::Tensor& out,
                                                       parallel::ReduceOp op) override {
    other(t);
    return inner_.reduce_scatter_async(t, out, op);
  }
  std::unique_ptr<parallel::Work> barrier_async() override { return inner_.barrier_async(); }
  std::unique_ptr<parallel::Comm> split(int color, int key) override {
    auto sub = inner_.split(color, key);
    auto& ref = *sub;
    return std::make_unique<CountingComm>(ref, counts_, std::move(sub));
  }

 private:
  void other(const torch::Tensor& t) {
    counts_->other_calls += 1;
    counts_->other_bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  parallel::Comm& inner_;
  std::shared_ptr<Counts> counts_;
  std::unique_ptr<parallel::Comm> owned_;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

int main(int argc, char** argv) {
  auto world = parallel::make_mpi_world_comm();
  // As lmforge train does: this node's cores split between its ranks, fp32 matmuls in OpenBLAS.
  int threads = parallel::configure_threads(parallel::ParallelConfig{}, parallel::detect_launch_env(), false);
  auto counts = std::make_shared<Counts>();
  CountingComm counted(*world, counts);
  const int tp = world->size();
  parallel::Grid grid(counted, 1, tp);

  trainer::ModelConfig mc;
  mc.arch = "llama";
  mc.vocab_size = 4096;  // a BPE-sized vocabulary: the head is a real share of the work
  mc.hidden_size = 256;
  mc.n_layers = 4;
  mc.n_heads = 8;
  mc.n_kv_heads = 4;
  mc.intermediate_size = 768;
  mc.max_seq_len = 128;
  const int64_t B = 8, T = 128, H = mc.hidden_size;
  torch::manual_seed(1);
  auto model = trainer::build_model(mc);
  const bool lora = argc > 1 && std::string(argv[1]) == "lora";
  if (lora) {
    trainer::PeftConfig peft;
    peft.method = trainer::PeftMethod::lora;
    peft.targets = {"all-linear"};  // r = 8 (PEFT's default) on every linear but the head
    trainer::apply_lora(*model, peft);
  }
  auto plan = trainer::parallelize(*model, grid);
  trainer::OptimConfig oc;
  auto optimizer = trainer::make_optimizer(*model, oc);
  auto tokens = torch::randint(0, mc.vocab_size, {B, T + 1}, at::detail::createCPUGenerator(2), torch::kLong);
  auto inputs = tokens.narrow(1, 0, T), targets = tokens.narrow(1, 1, T);
  auto step = [&] {
    optimizer->zero_grad();
    auto logits = model->forward(inputs);
    auto loss = tp > 1 ? parallel::vocab_parallel_cross_entropy_sum(logits, targets, grid.tp()) / targets.numel()
                       : trainer::causal_lm_loss(logits, targets);
    loss.backward();
    plan->average_replicated_gradients(*model);
    plan->clip_grad_norm(*model, 1.0);
    optimizer->step();
  };
  for (int i = 0; i < 2; ++i) step();  // warm-up: allocator, connections
  *counts = Counts{};
  const int steps = 5;
  std::vector<double> times;
  for (int i = 0; i < steps; ++i) {
    world->barrier();
    auto t = Clock::now();
    step();
    times.push_back(seconds_since(t));
  }
  std::sort(times.begin(), times.end());
  // Megatron without sequence parallelism: per layer 2 allreduces of (B, T, H) forward and 2
  // backward; the vocab-parallel embedding adds one forward, the head's input one backward, the
  // loss three of (B*T) values, the norm and replicated gradients one each (small).
  const int64_t activation = B * T * H * 4;
  const int64_t theory_bytes = (4 * mc.n_layers + 2) * activation;
  if (world->rank() == 0) {
    nlohmann::json out = {{"tp", tp},
                          {"peft", lora ? "lora" : "none"},
                          {"batch", {B, T}},
                          {"step_ms_median", 1e3 * times[times.size() / 2]},
                          {"allreduces_per_step", counts->allreduces / steps},
                          {"allreduce_mb_per_step", counts->allreduce_bytes / steps / 1e6},
                          {"theory_activation_allreduces", tp > 1 ? 4 * mc.n_layers + 2 : 0},
                          {"theory_activation_mb", tp > 1 ? theory_bytes / 1e6 : 0.0},
                          {"other_collectives_per_step", counts->other_calls / steps},
                          {"parameters_per_rank", model->num_parameters()},
                          {"blas_threads_per_rank", threads}};
    std::printf("%s\n", out.dump().c_str());
  }
  return 0;
}
