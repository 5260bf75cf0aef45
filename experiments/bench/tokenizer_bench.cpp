// experiments/bench/tokenizer_bench.cpp -- GPT-2 BPE encode throughput (MB/s of UTF-8 input) of
// lmforge's tokenizer on a corpus of documents separated by "\n%\n" lines (fortune format), one
// document per encode call, one thread. tokenizer_bench.sh runs it beside the npm references.
// Usage: tokenizer_bench TOKENIZER CORPUS [ROUNDS]; prints one JSON object.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/tokenizer.h"

using namespace lmforge;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tokenizer_bench TOKENIZER CORPUS [ROUNDS]\n");
    return 2;
  }
  int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  std::ifstream in(argv[2], std::ios::binary);
  std::string corpus((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> docs;
  for (size_t start = 0; start < corpus.size();) {
    size_t end = corpus.find("\n%\n", start);
    if (end == std::string::npos) end = corpus.size();
    docs.push_back(corpus.substr(start, end - start));
    start = end + 3;
  }
  auto load_start = Clock::now();
  auto tok = data::load_tokenizer_path(argv[1]);
  double load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
  // Round 1 starts with an empty piece cache; later rounds show the warm cache. Reported: best and first.
  double best = 1e30, first = 0;
  size_t tokens = 0;
  for (int r = 0; r < rounds; ++r) {
    tokens = 0;
    auto t = Clock::now();
    for (const auto& d : docs) tokens += tok->encode(d).size();
    double s = std::chrono::duration<double>(Clock::now() - t).count();
    if (r == 0) first = s;
    best = std::min(best, s);
  }
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  nlohmann::json out = {{"impl", "lmforge"}, {"docs", docs.size()}, {"bytes", bytes}, {"tokens", tokens},
                        {"load_s", load_s}, {"mb_per_s", bytes / best / 1e6}, {"first_round_mb_per_s", bytes / first / 1e6}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
