// core/safetensors.h -- the safetensors format: a strict reader and an atomic writer.
// Written by hand because no Debian package provides it; the format is in shared/reference.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lmforge {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes `tensors` (any device, any layout: copied to contiguous CPU) and string metadata.
// Layout as the reference writer: sorted by descending dtype size then name, header padded
// with spaces to a multiple of 8. Written to a temp file, fsynced, renamed into place.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A validated, memory-mapped safetensors file. The constructor checks the whole header (see
// load_safetensors) before any tensor is touched; tensors are read-only views of the mapping.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  const std::string& path() const { return path_; }
  // Tensor names, sorted.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;
  torch::ScalarType dtype(const std::string& name) const;
  // A CPU tensor sharing the mapped bytes (never write to it; it keeps the mapping alive), or a
  // copy when the bytes are not aligned for the dtype. Throws InputError for an unknown name.
  torch::Tensor view(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  struct Entry;
  struct Mapping;

 private:
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  std::vector<std::string> names_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Reads and validates a whole file before building any tensor. Throws InputError naming the
// file (and the tensor) on any violation: bad header length, non-JSON, unknown dtype,
// shape/size mismatch, holes, overlaps, duplicates, non-string metadata.
NamedTensors load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

}  // namespace lmforge
