// experiments/bench/checkpoint_bench.cpp -- checkpoint save and load time and MB/s for a config's
// model (quickstart by default), against writing the same bytes raw (write + fsync) in the same
// process, and the training time a checkpoint costs in steps. Prints one JSON object.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "data/text_dataset.h"
#include "parallel/comm.h"
#include "parallel/launcher.h"
#include "trainer/checkpoint.h"
#include "experiments/config.h"
#include "trainer/trainer.h"

using namespace lmforge;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += fs::file_size(e.path());
  return n;
}

// The baseline: the same number of bytes written with one write() and fsync'd.
double raw_write_seconds(const fs::path& path, uint64_t bytes) {
  std::string buffer(bytes, '\x5a');
  auto t = Clock::now();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (size_t done = 0; done < buffer.size();) {
    ssize_t n = ::write(fd, buffer.data() + done, buffer.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  double s = seconds_since(t);
  fs::remove(path);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = argc > 1 ? argv[1] : "configs/quickstart.yaml";
  Config cfg = load_config(config_path, {"train.max_steps=6", "checkpoint.every_steps=0", "checkpoint.save_final=false"});
  parallel::configure_threads(cfg.parallel, parallel::detect_launch_env(), cfg.train.precision == trainer::Precision::bf16);
  fs::path dir = fs::temp_directory_path() / ("lmforge_ckpt_bench_" + std::to_string(::getpid()));
  auto self = parallel::make_self_comm();
  torch::manual_seed(0);
  trainer::TrainerSettings s;
  s.train = cfg.train;
  s.optim = cfg.optim;
  s.schedule = cfg.schedule;
  s.checkpoint = cfg.checkpoint;
  s.run_dir = dir.string();
  auto tokens = torch::randint(0, cfg.model.vocab_size, {200000}, torch::kLong);
  auto model = trainer::build_model(cfg.model);
  trainer::Trainer t(model, s, data::WindowSampler(tokens, cfg.train.seq_len, 0), torch::Tensor(), nullptr, *self);
  auto start = Clock::now();
  t.run();  // 6 steps: the optimizer has state to save
  double step_s = seconds_since(start) / 6;

  double save_s = 1e9, load_s = 1e9, raw_s = 1e9;
  std::string saved;
  uint64_t bytes = 0;
  for (int round = 0; round < 3; ++round) {  // best of 3: the page cache and the disk are shared
    auto t0 = Clock::now();
    saved = t.save_checkpoint();
    save_s = std::min(save_s, seconds_since(t0));
    bytes = directory_bytes(saved);
    auto t1 = Clock::now();
    t.load_checkpoint(saved);
    load_s = std::min(load_s, seconds_since(t1));
    raw_s = std::min(raw_s, raw_write_seconds(dir / "raw.bin", bytes));
  }
  auto t2 = Clock::now();
  std::string problem = trainer::verify_checkpoint(saved);
  double verify_s = seconds_since(t2);
  double mb = static_cast<double>(bytes) / 1e6;
  nlohmann::json row = {{"config", config_path},        {"parameters", model->num_parameters()},
                        {"checkpoint_mb", mb},          {"save_s", save_s},
                        {"save_mb_per_s", mb / save_s}, {"raw_write_mb_per_s", mb / raw_s},
                        {"save_vs_raw", raw_s / save_s}, {"load_s", load_s},
                        {"load_mb_per_s", mb / load_s}, {"verify_s", verify_s},
                        {"step_s", step_s},             {"steps_lost_per_checkpoint", save_s / step_s},
                        {"verified", problem.empty()}};
  std::printf("%s\n", row.dump().c_str());
  fs::remove_all(dir);
  return 0;
}
