// trainer/safetensors.h -- the safetensors format: a strict reader and an atomic writer.
// Written by hand because no Debian package provides it; the format is in shared/reference.
#pragma once

#include <torch/torch.h>

#include <map>
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

// Reads and validates a whole file before building any tensor. Throws InputError naming the
// file (and the tensor) on any violation: bad header length, non-JSON, unknown dtype,
// shape/size mismatch, holes, overlaps, duplicates, non-string metadata.
NamedTensors load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

}  // namespace lmforge
