// data/text_dataset.h -- the first data path: plain-text files -> token ids cached in HDF5,
// sampled as fixed-length windows. Sources, templates and packing belong to the data pipeline.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace lmforge::config {
class Section;
}

namespace lmforge::data {

class Tokenizer;

struct DataConfig {
  std::vector<std::string> train;  // files or globs, one document per file (required)
  std::vector<std::string> eval;   // held-out files or globs; empty: no evaluation
  std::string cache_dir;           // token caches; empty: <run.output_dir>/cache
};
void read_data_config(config::Section& s, DataConfig& c);

// The token ids of a list of files, each document followed by eos.
struct TokenCorpus {
  torch::Tensor tokens;   // (N) int64
  std::string id;         // sha256 of the inputs' contents and the tokenizer: the dataset id
  std::string cache_path; // the HDF5 file it was read from
  int64_t num_documents = 0;
};

// Expands `patterns` (sorted glob matches, in pattern order), tokenizes the files once into
// <cache_dir>/<id>.h5 and reads that back. Missing or unreadable inputs throw InputError
// naming `config_key` and the file.
TokenCorpus open_text_corpus(const std::vector<std::string>& patterns, const Tokenizer& tokenizer,
                             const std::string& cache_dir, const std::string& config_key);

// A batch of windows: targets are the inputs shifted left by one token.
struct Batch {
  torch::Tensor inputs;   // (B, T) int64
  torch::Tensor targets;  // (B, T) int64
};

// Seeded random windows over a corpus; the same seed gives the same batches.
class WindowSampler {
 public:
  WindowSampler(torch::Tensor tokens, int64_t seq_len, uint64_t seed);
  Batch next(int64_t batch_size);
  // The generator's position as text, and back: a resumed run draws the batches it would have.
  std::string state() const;
  void restore(const std::string& state);

 private:
  torch::Tensor tokens_;
  int64_t seq_len_;
  std::mt19937_64 rng_;
};

// Up to `max_batches` batches of consecutive non-overlapping windows from the start: the same
// every call, so evaluations along a run compare.
std::vector<Batch> fixed_batches(const torch::Tensor& tokens, int64_t seq_len, int64_t batch_size,
                                 int64_t max_batches);

}  // namespace lmforge::data
