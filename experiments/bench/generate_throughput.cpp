// experiments/bench/generate_throughput.cpp -- greedy generation tokens/s with and without the KV
// cache, and HF model-directory load speed (MB/s of safetensors) for F32 single-file and BF16
// sharded directories. Prints one JSON object per line. Usage:
//   generate_throughput [hidden=768] [layers=12] [new_tokens=128] [prompt=32]
// The model is a random Llama-family model (GQA 12:4, vocab 32000) written to a temp directory.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "parallel/launcher.h"
#include "trainer/generate.h"
#include "trainer/models/hf_model.h"

using namespace lmforge;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int64_t dir_bytes(const fs::path& dir) {
  int64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") n += static_cast<int64_t>(e.file_size());
  return n;
}

// Best of `reps` loads of `dir`: the file is in the page cache after the first, so this is the
// parse + convert + copy speed, not the disk's.
nlohmann::json bench_load(const fs::path& dir, const std::string& label, int reps = 3) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t = Clock::now();
    auto model = trainer::load_hf_model(dir.string());
    best = std::min(best, seconds_since(t));
  }
  double mb = static_cast<double>(dir_bytes(dir)) / 1e6;
  return {{"bench", "load"}, {"variant", label}, {"mb", mb}, {"seconds", best}, {"mb_per_s", mb / best}};
}

nlohmann::json bench_generate(trainer::CausalLMImpl& model, int64_t prompt_len, int64_t new_tokens, bool cache) {
  std::vector<int64_t> prompt;
  for (int64_t i = 0; i < prompt_len; ++i) prompt.push_back((i * 7919) % 32000);
  trainer::SamplingConfig s;
  s.max_new_tokens = new_tokens;
  s.use_cache = cache;
  trainer::generate(model, prompt, [&] {  // warm-up: allocator and thread pools
    trainer::SamplingConfig w = s;
    w.max_new_tokens = 4;
    return w;
  }());
  auto t = Clock::now();
  auto g = trainer::generate(model, prompt, s);
  double secs = seconds_since(t);
  return {{"bench", "generate"}, {"kv_cache", cache},        {"prompt", prompt_len},
          {"new_tokens", g.ids.size()}, {"seconds", secs}, {"tokens_per_s", g.ids.size() / secs}};
}

}  // namespace

int main(int argc, char** argv) {
  int64_t hidden = argc > 1 ? std::stoll(argv[1]) : 768;
  int64_t layers = argc > 2 ? std::stoll(argv[2]) : 12;
  int64_t new_tokens = argc > 3 ? std::stoll(argv[3]) : 128;
  int64_t prompt_len = argc > 4 ? std::stoll(argv[4]) : 32;
  int threads = parallel::configure_threads(parallel::ParallelConfig{}, parallel::detect_launch_env(), false);

  trainer::ModelConfig cfg;
  cfg.arch = "llama";
  cfg.vocab_size = 32000;
  cfg.hidden_size = hidden;
  cfg.n_layers = layers;
  cfg.n_heads = 12;
  cfg.n_kv_heads = 4;
  cfg.max_seq_len = 2048;
  torch::manual_seed(0);
  auto model = trainer::build_model(cfg);
  std::printf("%s\n", nlohmann::json({{"model", "llama"}, {"hidden", hidden}, {"layers", layers},
                                      {"parameters", model->num_parameters()}, {"threads", threads}})
                          .dump()
                          .c_str());

  fs::path tmp = fs::temp_directory_path() / ("lmforge_bench_" + std::to_string(::getpid()));
  trainer::save_hf_model(*model, cfg, (tmp / "f32").string());
  trainer::HfSaveOptions sharded;
  sharded.dtype = torch::kBFloat16;
  sharded.max_shard_bytes = 50'000'000;
  trainer::save_hf_model(*model, cfg, (tmp / "bf16_sharded").string(), sharded);
  std::printf("%s\n", bench_load(tmp / "f32", "f32 single file").dump().c_str());
  std::printf("%s\n", bench_load(tmp / "bf16_sharded", "bf16 shards of 50 MB -> fp32").dump().c_str());
  fs::remove_all(tmp);

  for (bool cache : {true, false})
    std::printf("%s\n", bench_generate(*model, prompt_len, new_tokens, cache).dump().c_str());
  return 0;
}
