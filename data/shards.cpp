// data/shards.cpp -- PackedRows, the shard writer and the verified shard reader (HDF5 C API).
// The manifest is written by pipeline.cpp; this file only reads it back.
#include "data/shards.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "core/digest.h"
#include "core/errors.h"

namespace fs = std::filesystem;

namespace lmforge::data {

void PackedRows::add_document(const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask) {
  doc_starts_.push_back(static_cast<int64_t>(ids_.size()));
  int32_t pos = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (static_cast<int64_t>(ids_.size()) % row_len_ == 0) pos = 0;  // a new row restarts positions
    ids_.push_back(ids[i]);
    mask_.push_back(mask[i]);
    positions_.push_back(pos++);
  }
  real_tokens_ += static_cast<int64_t>(ids.size());
}

void PackedRows::finish(int32_t pad_id) {
  int32_t pos = positions_.empty() ? 0 : positions_.back() + 1;
  while (static_cast<int64_t>(ids_.size()) % row_len_ != 0) {
    ids_.push_back(pad_id);
    mask_.push_back(0);
    positions_.push_back(pos++);
  }
}

void PackedRows::drop_front(int64_t n) {
  const auto cut = static_cast<std::ptrdiff_t>(n * row_len_);
  ids_.erase(ids_.begin(), ids_.begin() + cut);
  mask_.erase(mask_.begin(), mask_.begin() + cut);
  positions_.erase(positions_.begin(), positions_.begin() + cut);
  std::vector<int64_t> kept;
  for (int64_t s : doc_starts_)
    if (s >= cut) kept.push_back(s - cut);
  doc_starts_ = std::move(kept);
}

std::string token_dtype_name(int64_t vocab_size) {
  return vocab_size <= 256 ? "uint8" : vocab_size <= 65536 ? "uint16" : "int32";
}

namespace {

std::mutex& hdf5_mutex() {  // Debian's libhdf5 is built without thread safety
  static std::mutex m;
  return m;
}

struct H5Handle {  // closes an HDF5 id with its own close function; movable, not copyable
  H5Handle(hid_t id, herr_t (*close)(hid_t)) : id(id), close(close) {}
  H5Handle(H5Handle&& other) noexcept : id(other.id), close(other.close) { other.id = -1; }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  hid_t id;
  herr_t (*close)(hid_t);
  ~H5Handle() {
    if (id >= 0) close(id);
  }
};

hid_t file_type_of(const std::string& name) {
  return name == "uint8" ? H5T_STD_U8LE : name == "uint16" ? H5T_STD_U16LE : H5T_STD_I32LE;
}

void write_2d(hid_t file, const char* name, hid_t file_type, hid_t mem_type, const void* data, hsize_t rows,
              hsize_t cols) {
  hsize_t dims[2] = {rows, cols};
  H5Handle space{H5Screate_simple(2, dims, nullptr), H5Sclose};
  H5Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  hsize_t chunk[2] = {std::min<hsize_t>(rows, 64), cols};  // 64 rows: a sampled row decompresses little else
  H5Pset_chunk(dcpl.id, 2, chunk);
  H5Pset_deflate(dcpl.id, 4);  // zlib level 4: most of level 9's ratio at a fraction of its time
  H5Pset_obj_track_times(dcpl.id, false);  // no timestamps: the same rows give the same bytes
  H5Handle ds{H5Dcreate2(file, name, file_type, space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0 || H5Dwrite(ds.id, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw InputError(std::string("HDF5: cannot write dataset ") + name);
}

void write_string_attribute(hid_t obj, const char* name, const std::string& value) {
  H5Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, value.size() + 1);
  H5Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  H5Handle attr{H5Acreate2(obj, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  H5Awrite(attr.id, type.id, value.c_str());
}

void fsync_path(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

}  // namespace

ShardInfo write_shard(const std::string& path, const PackedRows& rows, int64_t first, int64_t count,
                      int64_t vocab_size, const std::string& dataset_id, const std::string& split) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const int64_t len = rows.row_len();
  const size_t begin = static_cast<size_t>(first * len), end = static_cast<size_t>((first + count) * len);
  std::vector<int64_t> doc_starts;
  for (int64_t s : rows.doc_starts_)
    if (s >= static_cast<int64_t>(begin) && s < static_cast<int64_t>(end)) doc_starts.push_back(s - static_cast<int64_t>(begin));
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    H5Handle file{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
    if (file.id < 0) throw InputError("data.cache_dir: cannot create " + tmp);
    std::string dtype = token_dtype_name(vocab_size);
    bool big_positions = len > 65535;
    write_2d(file.id, "tokens", file_type_of(dtype), H5T_NATIVE_INT32, rows.ids_.data() + begin, count, len);
    write_2d(file.id, "loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, rows.mask_.data() + begin, count, len);
    write_2d(file.id, "positions", big_positions ? H5T_STD_I32LE : H5T_STD_U16LE, H5T_NATIVE_INT32,
             rows.positions_.data() + begin, count, len);
    hsize_t n_docs[1] = {doc_starts.size()};
    H5Handle space{H5Screate_simple(1, n_docs, nullptr), H5Sclose};
    H5Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
    H5Pset_obj_track_times(dcpl.id, false);
    H5Handle ds{H5Dcreate2(file.id, "doc_starts", H5T_STD_I64LE, space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT),
                H5Dclose};
    if (ds.id < 0 || (!doc_starts.empty() &&
                      H5Dwrite(ds.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, doc_starts.data()) < 0))
      throw InputError("HDF5: cannot write doc_starts to " + tmp);
    write_string_attribute(file.id, "dataset_id", dataset_id);
    write_string_attribute(file.id, "split", split);
    write_string_attribute(file.id, "format_version", "1");
  }
  fsync_path(tmp);
  fs::rename(tmp, path);
  ShardInfo info;
  info.sha256 = sha256_file(path);
  info.bytes = static_cast<int64_t>(fs::file_size(path));
  info.documents = static_cast<int64_t>(doc_starts.size());
  return info;
}

SplitWriter::SplitWriter(std::string dir, std::string split, int64_t row_len, int64_t shard_rows, int64_t vocab_size,
                         std::string dataset_id)
    : dir_(std::move(dir)), split_(std::move(split)), dataset_id_(std::move(dataset_id)), shard_rows_(shard_rows),
      vocab_size_(vocab_size), pending_(row_len) {}

int SplitWriter::add_document(const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask) {
  pending_.add_document(ids, mask);
  ++documents_;
  tokens_ += static_cast<int64_t>(ids.size());
  for (auto m : mask) trained_ += m;
  for (auto id : ids) max_id_ = std::max<int64_t>(max_id_, id);
  int written = 0;
  for (; pending_.rows() >= shard_rows_; ++written) write(shard_rows_);
  return written;
}

void SplitWriter::finish(int32_t pad_id) {
  pending_.finish(pad_id);
  if (pending_.rows() > 0) write(pending_.rows());
}

void SplitWriter::write(int64_t rows) {
  char name[32];
  std::snprintf(name, sizeof name, "%s_%05lld.h5", split_.c_str(), static_cast<long long>(shards_.size()));
  ShardInfo info = write_shard(dir_ + "/" + name, pending_, 0, rows, vocab_size_, dataset_id_, split_);
  shards_.push_back({{"file", name}, {"sha256", info.sha256}, {"rows", rows}, {"bytes", info.bytes},
                     {"documents", info.documents}});
  pending_.drop_front(rows);
  rows_written_ += rows;
}

nlohmann::json SplitWriter::summary() const {
  return {{"documents", documents_}, {"tokens", tokens_}, {"trained_tokens", trained_}, {"rows", rows()},
          {"shards", shards_}};
}

nlohmann::json SplitWriter::state() const {
  nlohmann::json s = summary();
  s["rows_written"] = rows_written_;
  s["max_id"] = max_id_;
  return s;
}

namespace {
template <class T>
void append_vector(std::string& out, const std::vector<T>& v) {
  uint64_t n = v.size();
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  out.append(reinterpret_cast<const char*>(v.data()), n * sizeof(T));
}
template <class T>
void take_vector(const std::string& in, size_t& at, std::vector<T>& v) {
  uint64_t n = 0;
  if (at + sizeof n > in.size()) throw InputError("resume state: pending rows truncated");
  std::memcpy(&n, in.data() + at, sizeof n);
  at += sizeof n;
  if (n > (in.size() - at) / sizeof(T)) throw InputError("resume state: pending rows truncated");
  v.resize(n);
  std::memcpy(v.data(), in.data() + at, n * sizeof(T));
  at += n * sizeof(T);
}
}  // namespace

std::string SplitWriter::pending_bytes() const {  // host byte order: read back by the same machine's build
  std::string out;
  append_vector(out, pending_.ids_);
  append_vector(out, pending_.mask_);
  append_vector(out, pending_.positions_);
  append_vector(out, pending_.doc_starts_);
  return out;
}

void SplitWriter::load(const nlohmann::json& state, const std::string& pending) {
  size_t at = 0;
  take_vector(pending, at, pending_.ids_);
  take_vector(pending, at, pending_.mask_);
  take_vector(pending, at, pending_.positions_);
  take_vector(pending, at, pending_.doc_starts_);
  shards_ = state.at("shards");
  rows_written_ = state.at("rows_written");
  documents_ = state.at("documents");
  tokens_ = state.at("tokens");
  trained_ = state.at("trained_tokens");
  max_id_ = state.at("max_id");
}

ShardSet::ShardSet(const std::string& dataset_dir, const std::string& split, int64_t vocab_size,
                   bool cross_document_attention)
    : vocab_size_(vocab_size), cross_document_attention_(cross_document_attention) {
  std::string manifest_path = dataset_dir + "/manifest.json";
  nlohmann::json m;
  try {
    std::ifstream in(manifest_path);
    if (!in) throw InputError(manifest_path + ": cannot read the dataset manifest");
    m = nlohmann::json::parse(in);
    row_len_ = m.at("row_len").get<int64_t>();
    if (m.at("max_token_id").get<int64_t>() >= vocab_size)
      throw InputError(manifest_path + ": token id " + std::to_string(m["max_token_id"].get<int64_t>()) +
                       " is outside the model's vocabulary of " + std::to_string(vocab_size));
    for (const auto& s : m.at("splits").at(split).at("shards")) {
      Shard shard{dataset_dir + "/" + s.at("file").get<std::string>(), total_rows_, s.at("rows").get<int64_t>()};
      std::error_code ec;
      auto size = fs::file_size(shard.path, ec);
      if (ec) throw InputError("shard " + shard.path + ": missing (" + ec.message() + ")");
      if (static_cast<int64_t>(size) != s.at("bytes").get<int64_t>())
        throw InputError("shard " + shard.path + ": " + std::to_string(size) + " bytes, the manifest says " +
                         std::to_string(s.at("bytes").get<int64_t>()) + " (truncated or replaced)");
      if (sha256_file(shard.path) != s.at("sha256").get<std::string>())
        throw InputError("shard " + shard.path + ": SHA-256 differs from the manifest (corrupt or replaced)");
      total_rows_ += shard.rows;
      shards_.push_back(shard);
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError(manifest_path + ": malformed manifest: " + std::string(e.what()));
  }
}

Batch ShardSet::read(const std::vector<int64_t>& rows) const {
  const int64_t b = static_cast<int64_t>(rows.size());
  auto tokens = torch::empty({b, row_len_}, torch::kInt32);
  auto mask = torch::empty({b, row_len_}, torch::kUInt8);
  auto positions = torch::empty({b, row_len_}, torch::kInt32);
  {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    std::map<size_t, H5Handle> open_files;  // each shard opened once per batch
    for (int64_t i = 0; i < b; ++i) {
      int64_t row = rows[i];
      size_t k = 0;
      while (k + 1 < shards_.size() && shards_[k + 1].first_row <= row) ++k;
      const Shard& shard = shards_[k];
      auto it = open_files.find(k);
      if (it == open_files.end())
        it = open_files.try_emplace(k, H5Fopen(shard.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose).first;
      const H5Handle& file = it->second;
      if (file.id < 0) throw InputError("shard " + shard.path + ": cannot be opened as HDF5");
      struct Target {
        const char* name;
        hid_t mem_type;
        void* dst;
      } targets[] = {{"tokens", H5T_NATIVE_INT32, tokens.data_ptr<int32_t>() + i * row_len_},
                     {"loss_mask", H5T_NATIVE_UINT8, mask.data_ptr<uint8_t>() + i * row_len_},
                     {"positions", H5T_NATIVE_INT32, positions.data_ptr<int32_t>() + i * row_len_}};
      for (const auto& t : targets) {
        H5Handle ds{H5Dopen2(file.id, t.name, H5P_DEFAULT), H5Dclose};
        H5Handle space{ds.id >= 0 ? H5Dget_space(ds.id) : -1, H5Sclose};
        hsize_t start[2] = {static_cast<hsize_t>(row - shard.first_row), 0};
        hsize_t count[2] = {1, static_cast<hsize_t>(row_len_)};
        H5Handle mem{H5Screate_simple(2, count, nullptr), H5Sclose};
        if (space.id < 0 || H5Sselect_hyperslab(space.id, H5S_SELECT_SET, start, nullptr, count, nullptr) < 0 ||
            H5Dread(ds.id, t.mem_type, mem.id, space.id, H5P_DEFAULT, t.dst) < 0)
          throw InputError("shard " + shard.path + ": cannot read row " + std::to_string(row - shard.first_row) +
                           " of dataset " + t.name);
      }
      auto row_tokens = tokens[i];
      int64_t max_id = row_tokens.max().item<int64_t>(), min_id = row_tokens.min().item<int64_t>();
      if (max_id >= vocab_size_ || min_id < 0)
        throw InputError("shard " + shard.path + ": row " + std::to_string(row - shard.first_row) + " holds token id " +
                         std::to_string(max_id >= vocab_size_ ? max_id : min_id) +
                         ", outside the model's vocabulary [0, " + std::to_string(vocab_size_) + ")");
    }
  }
  const int64_t t = row_len_ - 1;
  auto ids = tokens.to(torch::kLong);
  Batch batch;
  batch.inputs = ids.narrow(1, 0, t);
  batch.targets = ids.narrow(1, 1, t).masked_fill(mask.narrow(1, 1, t) == 0, -100);
  batch.positions = positions.narrow(1, 0, t).to(torch::kLong);
  if (!cross_document_attention_) batch.segments = (batch.positions == 0).cumsum(1);
  return batch;
}

std::vector<Batch> ShardSet::leading_batches(int64_t batch_size, int64_t max_rows) const {
  std::vector<Batch> out;
  int64_t n = std::min(total_rows_, max_rows);
  for (int64_t first = 0; first < n; first += batch_size) {
    std::vector<int64_t> rows;
    for (int64_t r = first; r < std::min(n, first + batch_size); ++r) rows.push_back(r);
    out.push_back(read(rows));
  }
  return out;
}

}  // namespace lmforge::data
