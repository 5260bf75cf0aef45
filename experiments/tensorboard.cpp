// experiments/tensorboard.cpp -- the protobuf wire encoding of Event/Summary, TFRecord framing
// and CRC-32C for tensorboard.h. Field numbers are those of tensorflow/core/util/event.proto and
// tensorflow/core/framework/summary.proto.
#include "experiments/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/errors.h"

namespace lmforge::experiments {

namespace {

// Protobuf wire types used here.
constexpr int kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_key(std::string& out, int field, int wire_type) { put_varint(out, static_cast<uint64_t>(field << 3 | wire_type)); }

template <typename T>
void put_little_endian(std::string& out, T v) {  // x86 and aarch64 are little-endian, as protobuf's fixed types
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5.
std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_key(e, 1, kFixed64);
  put_little_endian(e, wall_time);
  put_key(e, 2, kVarint);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli, reflected
      t[i] = c;
    }
    return t;
  }();
  return table;
}

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  const auto& table = crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string out;
  uint64_t length = data.size();
  put_little_endian(out, length);
  put_little_endian(out, masked_crc32c(out.data(), sizeof length));
  out += data;
  put_little_endian(out, masked_crc32c(data.data(), data.size()));
  return out;
}

std::string event_file_version(double wall_time) {
  std::string e = event_header(wall_time, 0);
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

std::string event_scalar(const std::string& tag, float value, int64_t step, double wall_time) {
  std::string v;  // Summary.Value: tag = 1, simple_value = 2 (float)
  put_bytes(v, 1, tag);
  put_key(v, 2, kFixed32);
  put_little_endian(v, value);
  std::string summary;  // Summary: repeated Value value = 1
  put_bytes(summary, 1, v);
  std::string e = event_header(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir) {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  double now = unix_time();
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  path_ = log_dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + host;
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw InputError("cannot create the TensorBoard event file " + path_);
  write(event_file_version(now));
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  write(event_scalar(tag, static_cast<float>(value), step, unix_time()));
}

void TensorBoardWriter::add_row(const nlohmann::json& row) {
  int64_t step = row.value("step", int64_t{0});
  for (const auto& [key, value] : row.items())
    if (key != "step" && value.is_number()) add_scalar(key, value.get<double>(), step);
}

void TensorBoardWriter::write(const std::string& event) {
  out_ << tfrecord(event);
  out_.flush();
}

}  // namespace lmforge::experiments
