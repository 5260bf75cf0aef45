// data/text_dataset.cpp -- glob expansion, the HDF5 token cache (written atomically), windows.
// HDF5 through its C API; nothing here knows about models.
#include "data/text_dataset.h"

#include <fcntl.h>
#include <glob.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/tokenizer.h"
#include "trainer/config_reader.h"
#include "trainer/digest.h"
#include "trainer/errors.h"

namespace fs = std::filesystem;

namespace lmforge::data {

void read_data_config(config::Section& s, DataConfig& c) {
  s.field("train", c.train, config::Need::required);
  s.field("eval", c.eval);
  s.field("cache_dir", c.cache_dir);
}

static constexpr int kCacheFormatVersion = 1;

static std::vector<std::string> expand_patterns(const std::vector<std::string>& patterns,
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

static std::string read_text_file(const std::string& path, const std::string& config_key) {
  if (fs::is_directory(path)) throw InputError(config_key + ": '" + path + "' is a directory, not a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(config_key + ": cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) throw InputError(config_key + ": read error in '" + path + "'");
  return out.str();
}

// ---------------------------------------------------------------------------- HDF5 cache

namespace {
struct H5Handle {  // closes an HDF5 id with its own close function
  hid_t id;
  herr_t (*close)(hid_t);
  ~H5Handle() {
    if (id >= 0) close(id);
  }
};

void write_string_attribute(hid_t obj, const char* name, const std::string& value) {
  H5Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, value.size() + 1);
  H5Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  H5Handle attr{H5Acreate2(obj, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  H5Awrite(attr.id, type.id, value.c_str());
}

std::string read_string_attribute(hid_t obj, const char* name) {
  if (H5Aexists(obj, name) <= 0) return "";
  H5Handle attr{H5Aopen(obj, name, H5P_DEFAULT), H5Aclose};
  H5Handle type{H5Aget_type(attr.id), H5Tclose};
  size_t size = H5Tget_size(type.id);
  std::string value(size, '\0');
  if (H5Aread(attr.id, type.id, value.data()) < 0) return "";
  return std::string(value.c_str());
}

void write_1d(hid_t file, const char* name, hid_t file_type, hid_t mem_type, const void* data, hsize_t n) {
  hsize_t dims[1] = {n};
  H5Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
  H5Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  hsize_t chunk[1] = {std::min<hsize_t>(n, 1 << 16)};  // 64K ids: 256 KiB chunks read whole
  H5Pset_chunk(dcpl.id, 1, chunk);
  H5Pset_deflate(dcpl.id, 4);  // zlib level 4: most of level 9's ratio at a fraction of its time
  H5Handle ds{H5Dcreate2(file, name, file_type, space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0 || H5Dwrite(ds.id, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw std::runtime_error(std::string("HDF5: cannot write dataset ") + name);
}

void write_cache(const std::string& path, const std::string& id, const std::string& tokenizer,
                 const std::vector<int32_t>& tokens, const std::vector<int64_t>& doc_offsets) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    H5Handle file{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
    if (file.id < 0) throw InputError("data.cache_dir: cannot create " + tmp);
    write_1d(file.id, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, tokens.data(), tokens.size());
    write_1d(file.id, "doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, doc_offsets.data(), doc_offsets.size());
    write_string_attribute(file.id, "dataset_id", id);
    write_string_attribute(file.id, "tokenizer", tokenizer);
    write_string_attribute(file.id, "format_version", std::to_string(kCacheFormatVersion));
  }
  int fd = open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  fs::rename(tmp, path);  // readers see the old file or the whole new one, never a half
}

// Reads a cache file; returns false if it is absent, unreadable or not the expected one.
bool read_cache(const std::string& path, const std::string& id, TokenCorpus& out) {
  if (!fs::exists(path)) return false;
  H5Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0 || read_string_attribute(file.id, "dataset_id") != id) return false;
  for (const char* name : {"tokens", "doc_offsets"}) {
    if (H5Lexists(file.id, name, H5P_DEFAULT) <= 0) return false;
  }
  H5Handle ds{H5Dopen2(file.id, "tokens", H5P_DEFAULT), H5Dclose};
  H5Handle space{H5Dget_space(ds.id), H5Sclose};
  hsize_t n = 0;
  if (H5Sget_simple_extent_ndims(space.id) != 1) return false;
  H5Sget_simple_extent_dims(space.id, &n, nullptr);
  auto tokens = torch::empty({static_cast<int64_t>(n)}, torch::kInt32);
  if (H5Dread(ds.id, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens.data_ptr<int32_t>()) < 0) return false;
  H5Handle docs{H5Dopen2(file.id, "doc_offsets", H5P_DEFAULT), H5Dclose};
  H5Handle doc_space{H5Dget_space(docs.id), H5Sclose};
  hsize_t n_offsets = 0;
  H5Sget_simple_extent_dims(doc_space.id, &n_offsets, nullptr);
  out.tokens = tokens.to(torch::kInt64);
  out.num_documents = static_cast<int64_t>(n_offsets) - 1;
  return true;
}
}  // namespace

TokenCorpus open_text_corpus(const std::vector<std::string>& patterns, const Tokenizer& tokenizer,
                             const std::string& cache_dir, const std::string& config_key) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // failures are reported by us, not printed by HDF5
  std::vector<std::string> files = expand_patterns(patterns, config_key);
  std::vector<std::string> texts;
  std::string key = "lmforge-token-cache-v" + std::to_string(kCacheFormatVersion) + "\n" +
                    tokenizer.fingerprint() + "\n";
  for (const auto& f : files) {
    texts.push_back(read_text_file(f, config_key));
    key += sha256_hex(texts.back()) + "\n";
  }
  TokenCorpus corpus;
  corpus.id = sha256_hex(key);
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) throw InputError("data.cache_dir: cannot create '" + cache_dir + "': " + ec.message());
  corpus.cache_path = (fs::path(cache_dir) / (corpus.id.substr(0, 32) + ".h5")).string();
  if (read_cache(corpus.cache_path, corpus.id, corpus)) return corpus;

  std::vector<int32_t> tokens;
  std::vector<int64_t> doc_offsets{0};
  for (const auto& text : texts) {
    auto ids = tokenizer.encode(text);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    tokens.push_back(tokenizer.eos_id());
    doc_offsets.push_back(static_cast<int64_t>(tokens.size()));
  }
  write_cache(corpus.cache_path, corpus.id, tokenizer.fingerprint(), tokens, doc_offsets);
  if (!read_cache(corpus.cache_path, corpus.id, corpus))
    throw InputError("data.cache_dir: cannot read back the token cache " + corpus.cache_path);
  return corpus;
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
