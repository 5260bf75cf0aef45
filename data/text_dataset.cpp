// data/text_dataset.cpp -- glob expansion, reading input files, random windows over a token
// stream. Nothing here knows about models or HDF5.
#include "data/text_dataset.h"

#include <glob.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/errors.h"

namespace fs = std::filesystem;

namespace lmforge::data {

std::vector<std::string> expand_patterns(const std::vector<std::string>& patterns,
                                                const std::string& config_key) {
  std::vector<std::string> files;
  for (const auto& pattern : patterns) {
    glob_t g{};
    int rc = glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
      globfree(&g);
      throw InputError(config_key + ": no file matches '" + pattern + "'");
    }
    if (rc != 0) {
      globfree(&g);
      throw InputError(config_key + ": cannot read '" + pattern + "'");
    }
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);  // glob sorts
    globfree(&g);
  }
  return files;
}

std::string read_text_file(const std::string& path, const std::string& config_key) {
  if (fs::is_directory(path)) throw InputError(config_key + ": '" + path + "' is a directory, not a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(config_key + ": cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) throw InputError(config_key + ": read error in '" + path + "'");
  return out.str();
}

// ------------------------------------------------------------------------------ sampling

WindowSampler::WindowSampler(torch::Tensor tokens, int64_t seq_len, uint64_t seed)
    : tokens_(std::move(tokens)), seq_len_(seq_len), rng_(seed) {
  TORCH_CHECK(tokens_.numel() > seq_len_, "corpus of ", tokens_.numel(), " tokens is too short for windows of ",
              seq_len_ + 1);
}

Batch WindowSampler::next(int64_t batch_size) {
  std::uniform_int_distribution<int64_t> start(0, tokens_.numel() - seq_len_ - 1);
  std::vector<int64_t> offsets(batch_size);
  for (auto& o : offsets) o = start(rng_);
  auto idx = torch::tensor(offsets).unsqueeze(1) + torch::arange(seq_len_ + 1);  // (B, T+1)
  auto windows = tokens_.index({idx});                                           // (B, T+1)
  return {windows.narrow(1, 0, seq_len_), windows.narrow(1, 1, seq_len_)};
}

Batch WindowSampler::next(int64_t global_rows, int64_t first, int64_t count) {
  Batch all = next(global_rows);
  return {all.inputs.narrow(0, first, count), all.targets.narrow(0, first, count)};
}

std::string WindowSampler::state() const {
  std::ostringstream out;
  out << rng_;
  return out.str();
}

void WindowSampler::restore(const std::string& state) {
  std::istringstream in(state);
  in >> rng_;
  if (!in) throw InputError("sampler state in the checkpoint is not a generator state");
}

std::vector<Batch> fixed_batches(const torch::Tensor& tokens, int64_t seq_len, int64_t batch_size,
                                 int64_t max_batches) {
  int64_t windows = std::min((tokens.numel() - 1) / seq_len, batch_size * max_batches);
  std::vector<Batch> batches;
  for (int64_t first = 0; first < windows; first += batch_size) {
    int64_t b = std::min(batch_size, windows - first);
    auto idx = (torch::arange(first, first + b) * seq_len).unsqueeze(1) + torch::arange(seq_len + 1);
    auto w = tokens.index({idx});  // (b, T+1)
    batches.push_back({w.narrow(1, 0, seq_len), w.narrow(1, 1, seq_len)});
  }
  return batches;
}

}  // namespace lmforge::data
