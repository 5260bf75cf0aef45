// core/config_reader.h -- the YAML binding machinery every module's config reader uses:
// layered sources (base files, the file, --set overrides), typed fields with limits, and
// diagnostics that carry file:line:col and the key path. Section structs live in their modules.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/errors.h"

namespace YAML {
class Node;
}

namespace lmforge::config {

// Raised once, after every error of a load has been collected; what() lists them all.
class ConfigError : public InputError {
 public:
  explicit ConfigError(const std::string& all_errors) : InputError(all_errors) {}
};

struct Diagnostic {
  std::string where;     // "file:line:col"
  std::string key_path;  // "train.max_steps"
  std::string message;
};

class Diagnostics {
 public:
  void add(std::string where, std::string key_path, std::string message);
  bool empty() const { return items_.empty(); }
  const std::vector<Diagnostic>& items() const { return items_; }
  std::string format() const;  // one "where: key: message" line per error
 private:
  std::vector<Diagnostic> items_;
};

// Inclusive/exclusive numeric bounds; unset means unbounded.
struct Limits {
  std::optional<double> min, max;
  bool min_exclusive = false;
};
Limits at_least(double v);
Limits greater_than(double v);
Limits between(double lo, double hi);

enum class Need { optional, required };

struct Layer;  // one source of keys: a file or one --set override (defined in the .cpp)
using Layers = std::vector<std::shared_ptr<const Layer>>;

// Loads `path` and its `base:` chain, then appends one layer per --set override.
// Syntax errors, empty files, missing bases and malformed overrides go to `diag`.
Layers load_layers(const std::string& path, const std::vector<std::string>& overrides,
                   Diagnostics& diag);

// A view of one mapping (the root, or a section such as "train") across all layers.
// Later layers win key by key; nested mappings merge; sequences and scalars replace.
class Section {
 public:
  Section(Layers layers, Diagnostics& diag, YAML::Node* resolved);
  Section(Section&&) noexcept;
  ~Section();

  void field(const std::string& key, bool& value);
  void field(const std::string& key, int64_t& value, Limits limits = {}, Need need = Need::optional);
  void field(const std::string& key, double& value, Limits limits = {}, Need need = Need::optional);
  void field(const std::string& key, std::string& value, const std::vector<std::string>& choices = {},
             Need need = Need::optional);
  // A string or a list of strings.
  void field(const std::string& key, std::vector<std::string>& value, Need need = Need::optional);
  // One of `choices` by name, parsed once into its enum value (the resolved config shows the name).
  template <class Enum>
  void choice(const std::string& key, Enum& value, const std::vector<std::pair<std::string, Enum>>& choices,
              Need need = Need::optional) {
    std::string name;
    std::vector<std::string> names;
    for (const auto& [n, v] : choices) {
      names.push_back(n);
      if (v == value) name = n;
    }
    field(key, name, names, need);
    for (const auto& [n, v] : choices)
      if (n == name) value = v;
  }

  Section child(const std::string& key);  // a nested mapping; absent means all defaults
  // A list of mappings (e.g. data.sources), each a Section at "key[i]"; absent means empty.
  // The whole list comes from the highest-priority layer that sets it (lists replace).
  std::vector<Section> items(const std::string& key);
  bool has(const std::string& key) const;
  // File that supplied `key` (for paths relative to it); the first layer's file when absent.
  std::string file_of(const std::string& key) const;
  // Reports a cross-field error at the location of `key`.
  void error(const std::string& key, const std::string& message);
  // Reports every key no field() or child() asked for, with a did-you-mean suggestion.
  void finish();

  struct State;  // opaque: defined in config_reader.cpp

 private:
  explicit Section(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// Closest candidate within an edit distance that scales with the word; empty if none.
std::string suggest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace lmforge::config
