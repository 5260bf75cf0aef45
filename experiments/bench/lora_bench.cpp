// experiments/bench/lora_bench.cpp -- one mode per process (peak RSS is per process): full
// fine-tuning or LoRA (r=8 on attention and MLP) of a config's model, trained for a few steps.
// Prints trainable parameters, checkpoint bytes, peak resident memory and step time as JSON.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "data/text_dataset.h"
#include "experiments/config.h"
#include "parallel/comm.h"
#include "parallel/launcher.h"
#include "trainer/models/hf_model.h"
#include "trainer/peft/apply.h"
#include "trainer/peft/lora_run.h"
#include "trainer/peft/peft_config.h"
#include "trainer/trainer.h"

using namespace lmforge;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += fs::file_size(e.path());
  return n;
}

double peak_rss_mb() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "lora";  // full | lora
  std::string config_path = argc > 2 ? argv[2] : "configs/quickstart.yaml";
  int64_t steps = argc > 3 ? std::stoll(argv[3]) : 10;
  const int64_t warmup = 2;  // the first steps allocate the optimizer state and warm the allocator
  Config cfg = load_config(config_path, {"checkpoint.every_steps=0", "checkpoint.save_final=false"});
  parallel::configure_threads(cfg.parallel, parallel::detect_launch_env(), cfg.train.precision == trainer::Precision::bf16);
  fs::path dir = fs::temp_directory_path() / ("lmforge_lora_bench_" + std::to_string(::getpid()));
  auto self = parallel::make_self_comm();
  torch::manual_seed(0);
  auto model = trainer::build_model(cfg.model);
  trainer::TrainerSettings s;
  s.train = cfg.train;
  s.optim = cfg.optim;
  s.schedule = cfg.schedule;
  s.checkpoint = cfg.checkpoint;
  s.run_dir = dir.string();
  int64_t trainable = model->num_parameters();
  if (mode == "lora") {
    trainer::PeftConfig p;
    p.method = trainer::PeftMethod::lora;
    p.r = 8;
    p.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    std::string base = trainer::prepare_lora_base(*model, cfg.model, dir.string());
    s.base_reference = trainer::base_reference(base).dump();
    trainable = trainer::apply_lora(*model, p).trainable;
  }
  auto tokens = torch::randint(0, cfg.model.vocab_size, {200000}, torch::kLong);
  {  // warm-up trainer: first-touch allocations and thread pools, outside the timing
    trainer::TrainerSettings warm = s;
    warm.train.max_steps = warmup;
    trainer::Trainer w(model, warm, data::WindowSampler(tokens, cfg.train.seq_len, 1), torch::Tensor(), nullptr, *self);
    w.run();
  }
  s.train.max_steps = steps;
  trainer::Trainer t(model, s, data::WindowSampler(tokens, cfg.train.seq_len, 0), torch::Tensor(), nullptr, *self);
  auto start = Clock::now();
  t.run();
  double step_s = std::chrono::duration<double>(Clock::now() - start).count() / static_cast<double>(steps);
  std::string saved = t.save_checkpoint();
  nlohmann::json row = {{"mode", mode},
                        {"config", config_path},
                        {"parameters", model->num_parameters()},
                        {"trainable", trainable},
                        {"checkpoint_bytes", directory_bytes(saved)},
                        {"peak_rss_mb", peak_rss_mb()},
                        {"step_s", step_s}};
  std::printf("%s\n", row.dump().c_str());
  fs::remove_all(dir);
  return 0;
}
