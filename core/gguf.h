// core/gguf.h -- the GGUF v3 container (llama.cpp's model file): typed metadata, tensor infos,
// aligned data, and ggml's f32/f16/bf16/q8_0/q4_0 encodings. What a model's keys and names are is
// the family's (trainer/models/family.h); the export that fills it is trainer/models/gguf_export.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lmforge {

// Written by hand: no Debian package writes GGUF. The layout follows ggml's gguf.h/gguf.cpp (facts
// of the format, no code): "GGUF", version 3, counts, key/values, tensor infos, data aligned to
// general.alignment. ggml's tensor type ids:
enum class GgmlType : uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q8_0 = 8, bf16 = 30 };
const char* ggml_type_name(GgmlType t);
// Values per quantised block (1 for the float types), and the bytes a block takes.
int64_t ggml_block_size(GgmlType t);
int64_t ggml_block_bytes(GgmlType t);

// A tensor's bytes in ggml's layout. `t` (any float dtype, rows of ne0 = the last dimension);
// q8_0 blocks: fp16 scale d = max|x| / 127, then 32 int8 round(x / d); q4_0 blocks: fp16 d = the
// signed value of largest magnitude / -8, then 16 bytes whose low nibbles are values 0..15 and high
// nibbles values 16..31, each min(15, trunc(x / d + 8.5)). std::invalid_argument when the last
// dimension is not a multiple of the block size.
std::string ggml_encode(const torch::Tensor& t, GgmlType type);
// The inverse, to fp32 of `shape` (tests and readers).
torch::Tensor ggml_decode(const std::string& bytes, GgmlType type, const std::vector<int64_t>& shape);

class GgufWriter {
 public:
  // Metadata, in the order added. GGUF's value types: uint32 (4), int32 (5), float32 (6), bool (7),
  // string (8), array (9) of one of them.
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_f32s(const std::string& key, const std::vector<float>& v);
  void add_i32s(const std::string& key, const std::vector<int32_t>& v);
  bool has(const std::string& key) const;

  // A tensor of torch shape (d0, ..., dn-1), stored with ne = (dn-1, ..., d0) as ggml counts them.
  // `t` is encoded now (ggml_encode), so the caller's tensor can go.
  void add_tensor(const std::string& name, const torch::Tensor& t, GgmlType type);

  // Writes PATH.tmp.<pid>, fsyncs and renames it: a reader never sees a half-written file, and a
  // failure removes the temp file. Alignment: general.alignment when added (a uint32), else 32.
  void write(const std::string& path) const;

 private:
  std::string kv_;         // the serialised key/values
  uint64_t kv_count_ = 0;
  std::vector<std::string> keys_;
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    GgmlType type;
    std::string bytes;
  };
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;  // GGUF_DEFAULT_ALIGNMENT
  void key(const std::string& k, uint32_t type);
};

}  // namespace lmforge
