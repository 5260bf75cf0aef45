// core/gguf.cpp -- GGUF v3 writing and ggml's block encodings (see core/gguf.h for the layout).
// Hand-written from the format's description; which keys and tensors a model has is not here.
#include "core/gguf.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace lmforge {

namespace {

constexpr uint32_t kVersion = 3;
enum ValueType : uint32_t { u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9 };

template <typename T>
void put(std::string& out, T v) {  // little-endian, as every machine lmforge runs on stores it
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}
uint16_t fp16_bits(float v) {  // round to nearest even, as ggml's F16C conversion
  c10::Half h(v);
  return h.x;
}
float fp16_value(uint16_t bits) {
  c10::Half h;
  h.x = bits;
  return static_cast<float>(h);
}

void encode_q8_0(const float* x, int64_t n, std::string& out) {
  for (int64_t b = 0; b < n; b += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put<uint16_t>(out, fp16_bits(d));
    for (int j = 0; j < 32; ++j) put<int8_t>(out, static_cast<int8_t>(std::round(x[b + j] * id)));
  }
}

void encode_q4_0(const float* x, int64_t n, std::string& out) {
  for (int64_t b = 0; b < n; b += 32) {
    float amax = 0, max = 0;  // the value of largest magnitude, with its sign
    for (int j = 0; j < 32; ++j)
      if (amax < std::fabs(x[b + j])) {
        amax = std::fabs(x[b + j]);
        max = x[b + j];
      }
    float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put<uint16_t>(out, fp16_bits(d));
    for (int j = 0; j < 16; ++j) {
      int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[b + j] * id + 8.5f)));
      int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[b + 16 + j] * id + 8.5f)));
      put<uint8_t>(out, static_cast<uint8_t>(lo | (hi << 4)));
    }
  }
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return "f32";
    case GgmlType::f16: return "f16";
    case GgmlType::bf16: return "bf16";
    case GgmlType::q8_0: return "q8_0";
    case GgmlType::q4_0: return "q4_0";
  }
  return "?";
}

int64_t ggml_block_size(GgmlType t) { return t == GgmlType::q8_0 || t == GgmlType::q4_0 ? 32 : 1; }

int64_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return 4;
    case GgmlType::f16:
    case GgmlType::bf16: return 2;
    case GgmlType::q8_0: return 2 + 32;
    case GgmlType::q4_0: return 2 + 16;
  }
  return 0;
}

std::string ggml_encode(const torch::Tensor& t, GgmlType type) {
  int64_t row = t.dim() == 0 ? 1 : t.size(-1);
  if (row % ggml_block_size(type) != 0)
    throw std::invalid_argument("rows of " + std::to_string(row) + " values are not a multiple of " +
                                ggml_type_name(type) + "'s block of " + std::to_string(ggml_block_size(type)));
  torch::Tensor x = t.detach().to(torch::kCPU).contiguous();
  std::string out;
  if (type == GgmlType::f16 || type == GgmlType::bf16) {
    x = x.to(type == GgmlType::f16 ? torch::kHalf : torch::kBFloat16).contiguous();  // round to nearest even
  } else {
    x = x.to(torch::kFloat).contiguous();
  }
  if (type == GgmlType::f32 || type == GgmlType::f16 || type == GgmlType::bf16) {
    out.assign(static_cast<const char*>(x.data_ptr()), static_cast<size_t>(x.numel() * x.element_size()));
    return out;
  }
  out.reserve(static_cast<size_t>(x.numel() / 32 * ggml_block_bytes(type)));
  if (type == GgmlType::q8_0) encode_q8_0(x.data_ptr<float>(), x.numel(), out);
  else encode_q4_0(x.data_ptr<float>(), x.numel(), out);
  return out;
}

torch::Tensor ggml_decode(const std::string& bytes, GgmlType type, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (static_cast<int64_t>(bytes.size()) != n / ggml_block_size(type) * ggml_block_bytes(type))
    throw std::invalid_argument(std::string("ggml_decode: wrong byte count for ") + ggml_type_name(type));
  auto raw = torch::from_blob(const_cast<char*>(bytes.data()), {static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  if (type == GgmlType::f32) return raw.view(torch::kFloat).clone().view(shape);
  if (type == GgmlType::f16) return raw.view(torch::kHalf).to(torch::kFloat).view(shape);
  if (type == GgmlType::bf16) return raw.view(torch::kBFloat16).to(torch::kFloat).view(shape);
  torch::Tensor out = torch::empty({n}, torch::kFloat);
  float* y = out.data_ptr<float>();
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (int64_t b = 0; b < n; b += 32) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    float d = fp16_value(bits);
    p += 2;
    if (type == GgmlType::q8_0) {
      for (int j = 0; j < 32; ++j) y[b + j] = static_cast<float>(static_cast<int8_t>(p[j])) * d;
      p += 32;
    } else {
      for (int j = 0; j < 16; ++j) {
        y[b + j] = static_cast<float>((p[j] & 0x0F) - 8) * d;
        y[b + 16 + j] = static_cast<float>((p[j] >> 4) - 8) * d;
      }
      p += 16;
    }
  }
  return out.view(shape);
}

void GgufWriter::key(const std::string& k, uint32_t type) {
  if (has(k)) throw std::invalid_argument("GGUF key " + k + " added twice");
  keys_.push_back(k);
  ++kv_count_;
  put_string(kv_, k);
  put<uint32_t>(kv_, type);
}

bool GgufWriter::has(const std::string& k) const { return std::find(keys_.begin(), keys_.end(), k) != keys_.end(); }

void GgufWriter::add_u32(const std::string& k, uint32_t v) {
  key(k, u32);
  put(kv_, v);
  if (k == "general.alignment") {
    if (v == 0 || (v & (v - 1)) != 0) throw std::invalid_argument("general.alignment must be a power of two");
    alignment_ = v;
  }
}
void GgufWriter::add_i32(const std::string& k, int32_t v) {
  key(k, i32);
  put(kv_, v);
}
void GgufWriter::add_f32(const std::string& k, float v) {
  key(k, f32);
  put(kv_, v);
}
void GgufWriter::add_bool(const std::string& k, bool v) {
  key(k, boolean);
  put<uint8_t>(kv_, v ? 1 : 0);
}
void GgufWriter::add_string(const std::string& k, const std::string& v) {
  key(k, string);
  put_string(kv_, v);
}
void GgufWriter::add_strings(const std::string& k, const std::vector<std::string>& v) {
  key(k, array);
  put<uint32_t>(kv_, string);
  put<uint64_t>(kv_, v.size());
  for (const auto& s : v) put_string(kv_, s);
}
void GgufWriter::add_f32s(const std::string& k, const std::vector<float>& v) {
  key(k, array);
  put<uint32_t>(kv_, f32);
  put<uint64_t>(kv_, v.size());
  for (float x : v) put(kv_, x);
}
void GgufWriter::add_i32s(const std::string& k, const std::vector<int32_t>& v) {
  key(k, array);
  put<uint32_t>(kv_, i32);
  put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put(kv_, x);
}

void GgufWriter::add_tensor(const std::string& name, const torch::Tensor& t, GgmlType type) {
  for (const auto& existing : tensors_)
    if (existing.name == name) throw std::invalid_argument("GGUF tensor " + name + " added twice");
  Tensor out{name, {}, type, ggml_encode(t, type)};
  for (int64_t d = t.dim() - 1; d >= 0; --d) out.ne.push_back(static_cast<uint64_t>(t.size(d)));
  if (out.ne.empty()) out.ne.push_back(1);
  tensors_.push_back(std::move(out));
}

void GgufWriter::write(const std::string& path) const {
  auto padding = [&](uint64_t at) { return (alignment_ - at % alignment_) % alignment_; };
  std::string head;
  head += "GGUF";
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_count_);
  head += kv_;
  uint64_t offset = 0;  // from the start of the data section, each aligned
  for (const auto& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) put<uint64_t>(head, d);
    put<uint32_t>(head, static_cast<uint32_t>(t.type));
    put<uint64_t>(head, offset);
    offset += t.bytes.size();
    offset += padding(offset);
  }
  head.append(padding(head.size()), '\0');

  std::string tmp = path + ".tmp." + std::to_string(getpid());
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot create " + tmp);
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
    const std::string zeros(alignment_, '\0');
    for (const auto& t : tensors_) {
      out.write(t.bytes.data(), static_cast<std::streamsize>(t.bytes.size()));
      out.write(zeros.data(), static_cast<std::streamsize>(padding(t.bytes.size())));
    }
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp + " (disk full?)");
    out.close();
    int fd = ::open(tmp.c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

}  // namespace lmforge
