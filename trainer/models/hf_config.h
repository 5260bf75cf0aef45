// trainer/models/hf_config.h -- typed reads of an HF config.json, each error naming the file and
// the key. Which keys a family reads is the family's (llama.cpp, gpt2.cpp).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/errors.h"

namespace lmforge::trainer {

class HfConfigJson {
 public:
  HfConfigJson(nlohmann::json j, std::string file) : j_(std::move(j)), file_(std::move(file)) {}
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  bool present(const std::string& key) const { return j_.contains(key); }  // given, null included
  InputError error(const std::string& key, const std::string& what) const {
    return InputError(file_ + ": " + key + ": " + what);
  }
  // An integer of at least `min`; `fallback` when absent, else "required, missing".
  int64_t integer(const std::string& key, std::optional<int64_t> fallback = std::nullopt, int64_t min = 1) const;
  double number(const std::string& key, double fallback, bool positive = true) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> ids(const std::string& key) const;  // an int, a list of ints, or null
  const nlohmann::json& raw(const std::string& key) const { return j_[key]; }
  // The same file with `key` set to `value` (a nested object read as the top level's keys).
  HfConfigJson with(const std::string& key, nlohmann::json value) const {
    HfConfigJson copy = *this;
    copy.j_[key] = std::move(value);
    return copy;
  }

 private:
  nlohmann::json j_;
  std::string file_;
};

}  // namespace lmforge::trainer
