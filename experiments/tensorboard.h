// experiments/tensorboard.h -- TensorBoard event files: scalar summaries in TFRecord framing.
// The Event and Summary protos are written by a small hand-rolled protobuf encoder (a few fields
// of fixed wire types), not libprotobuf, whose runtime clashes with the one inside LibTorch; and
// CRC-32C is computed here because Debian packages no C library for it. No reading, no images.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace lmforge::experiments {

// CRC-32C (Castagnoli), and TFRecord's mask of it: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

// One TFRecord: length (uint64 LE), masked CRC of the length, data, masked CRC of the data.
std::string tfrecord(const std::string& data);

// Serialized tensorflow.Event protos: the file-version header and one scalar summary.
std::string event_file_version(double wall_time);
std::string event_scalar(const std::string& tag, float value, int64_t step, double wall_time);

// Appends events to <log_dir>/events.out.tfevents.<unix time>.<host>, which it creates with the
// "brain.Event:2" header. Each write is flushed, so TensorBoard sees a live run.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& log_dir);
  void add_scalar(const std::string& tag, double value, int64_t step);
  // Every numeric key of a metrics row but "step", as a scalar of that row's step.
  void add_row(const nlohmann::json& row);
  const std::string& path() const { return path_; }

 private:
  void write(const std::string& event);
  std::string path_;
  std::ofstream out_;
};

}  // namespace lmforge::experiments
