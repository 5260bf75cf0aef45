// core/digest.h -- SHA-256 of strings and files (OpenSSL), as lowercase hex.
// Used for cache keys, dataset ids, config hashes and manifests.
#pragma once

#include <string>

namespace lmforge {

std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);  // throws InputError naming the file

}  // namespace lmforge
