// experiments/bench/train_throughput.cpp -- tokens/s and model FLOP utilisation of lmforge's
// training step for a config's model in fp32 and bf16, against a matmul peak measured here.
// Prints one JSON object per line; train_throughput.sh runs it beside the Python baseline.

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "data/text_dataset.h"
#include "parallel/launcher.h"
#include "experiments/config.h"
#include "trainer/models/model.h"
#include "trainer/optim.h"
#include "trainer/trainer.h"

using namespace lmforge;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best-of-N GFLOP/s of an n x n x n matmul in `dtype`: the peak MFU is measured against.
double matmul_peak_gflops(torch::ScalarType dtype, int64_t n = 1024, int reps = 10) {
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  torch::mm(a, b);
  double best = 0;
  for (int i = 0; i < reps; ++i) {
    auto t = Clock::now();
    auto c = torch::mm(a, b);
    best = std::max(best, 2.0 * n * n * n / seconds_since(t) / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = argc > 1 ? argv[1] : "configs/quickstart.yaml";
  int steps = argc > 2 ? std::stoi(argv[2]) : 20;
  Config cfg = load_config(config_path);

  const int64_t b = cfg.train.micro_batch_size, t = cfg.train.seq_len;
  for (std::string precision : {"fp32", "bf16"}) {
    // The thread split lmforge train uses for this precision, and the peak under that split.
    int threads = parallel::configure_threads(cfg.parallel, parallel::detect_launch_env(), precision == "bf16");
    double peak = matmul_peak_gflops(precision == "bf16" ? torch::kBFloat16 : torch::kFloat);
    torch::manual_seed(0);
    auto model = trainer::build_model(cfg.model);
    auto optimizer = trainer::make_optimizer(*model, cfg.optim);
    auto tokens = torch::randint(0, 256, {200000}, torch::kLong);
    data::WindowSampler sampler(tokens, t, 0);
    // 6 N per token for forward + backward over the matmul weights (embedding lookups are not
    // matmuls), plus 12 L C T for attention scores and values (PaLM's accounting).
    int64_t matmul_params = model->num_parameters() - cfg.model.vocab_size * cfg.model.hidden_size *
                                                          (cfg.model.tie_embeddings ? 0 : 1);
    double flops_per_token = 6.0 * matmul_params + 12.0 * cfg.model.n_layers * cfg.model.hidden_size * t;
    auto step = [&] {
      auto batch = sampler.next(b);
      optimizer->zero_grad();
      torch::Tensor loss;
      {
        trainer::Autocast autocast(precision == "bf16");
        loss = trainer::causal_lm_loss(model->forward(batch.inputs), batch.targets);
      }
      loss.backward();
      trainer::clip_grad_norm(*model, 1.0);
      optimizer->step();
      return loss.item<double>();
    };
    for (int i = 0; i < 3; ++i) step();  // warm-up: allocator, oneDNN kernel selection
    auto start = Clock::now();
    for (int i = 0; i < steps; ++i) step();
    double elapsed = seconds_since(start);
    double tokens_per_s = static_cast<double>(steps * b * t) / elapsed;
    nlohmann::json row = {{"impl", "lmforge"},
                          {"precision", precision},
                          {"params", model->num_parameters()},
                          {"batch", b},
                          {"seq_len", t},
                          {"steps", steps},
                          {"threads", threads},
                          {"tokens_per_s", tokens_per_s},
                          {"model_gflops", tokens_per_s * flops_per_token / 1e9},
                          {"matmul_peak_gflops", peak},
                          {"mfu", tokens_per_s * flops_per_token / 1e9 / peak}};
    std::printf("%s\n", row.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}
