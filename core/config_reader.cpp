// core/config_reader.cpp -- layered YAML sources, typed field binding, error collection.
// What the keys mean lives with each module's reader (trainer/config.cpp assembles them).
#include "core/config_reader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace lmforge::config {

struct Layer {
  std::string file;  // config path, or "<--set #N>" for an override
  YAML::Node root;   // a mapping
  bool is_override = false;
  std::vector<std::pair<std::string, int>> key_cols;  // override: key path -> 1-based column
  int value_col = 1;                                   // override: column of the value
};

// ---------------------------------------------------------------------------- diagnostics

void Diagnostics::add(std::string where, std::string key_path, std::string message) {
  items_.push_back({std::move(where), std::move(key_path), std::move(message)});
}

std::string Diagnostics::format() const {
  std::ostringstream out;
  for (const auto& d : items_) {
    out << d.where << ": error: " << (d.key_path.empty() ? "(top level)" : d.key_path) << ": "
        << d.message << "\n";
  }
  return out.str();
}

Limits at_least(double v) { return Limits{v, std::nullopt, false}; }
Limits greater_than(double v) { return Limits{v, std::nullopt, true}; }
Limits between(double lo, double hi) { return Limits{lo, hi, false}; }

static std::string mark_text(const std::string& file, const YAML::Mark& m) {
  // yaml-cpp marks are 0-based; a node built in memory has line -1.
  int line = m.line < 0 ? 1 : m.line + 1, col = m.column < 0 ? 1 : m.column + 1;
  return file + ":" + std::to_string(line) + ":" + std::to_string(col);
}

static std::string where(const Layer& layer, const YAML::Node& node, const std::string& key_path,
                         bool at_value) {
  if (!layer.is_override) return mark_text(layer.file, node.Mark());
  int col = 1;
  if (at_value) {
    col = layer.value_col;
  } else {
    for (const auto& [path, c] : layer.key_cols)
      if (path == key_path) col = c;
  }
  return layer.file + ":1:" + std::to_string(col);
}

static std::string join_path(const std::string& section, const std::string& key) {
  return section.empty() ? key : section + "." + key;
}

static std::string format_number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

static std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "nothing";
    default: return "'" + node.Scalar() + "'";
  }
}

// --------------------------------------------------------------------------------- loading

static void check_duplicates(const Layer& layer, const YAML::Node& node, const std::string& path,
                             Diagnostics& diag) {
  if (node.IsSequence()) {
    for (const auto& item : node) check_duplicates(layer, item, path, diag);
    return;
  }
  if (!node.IsMap()) return;
  std::vector<std::pair<std::string, YAML::Mark>> seen;
  for (const auto& kv : node) {
    std::string key = kv.first.Scalar();
    std::string key_path = join_path(path, key);
    auto first = std::find_if(seen.begin(), seen.end(), [&](const auto& s) { return s.first == key; });
    if (first != seen.end()) {
      diag.add(where(layer, kv.first, key_path, false), key_path,
               "duplicate key (first defined at line " + std::to_string(first->second.line + 1) + ")");
    } else {
      seen.emplace_back(key, kv.first.Mark());
    }
    check_duplicates(layer, kv.second, key_path, diag);
  }
}

static void load_file_layers(const fs::path& path, Layers& out, std::set<std::string>& chain,
                             Diagnostics& diag, const std::string& referenced_from) {
  std::string file = path.string();
  std::error_code ec;
  std::string canonical = fs::weakly_canonical(path, ec).string();
  if (chain.count(canonical)) {
    diag.add(referenced_from, "base", "'base:' inheritance cycle through " + file);
    return;
  }
  if (!fs::is_regular_file(path)) {
    diag.add(referenced_from.empty() ? file : referenced_from, referenced_from.empty() ? "" : "base",
             "cannot open config file " + file);
    return;
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::ParserException& e) {
    diag.add(mark_text(file, e.mark), "", "YAML syntax error: " + e.msg);
    return;
  } catch (const YAML::Exception& e) {
    diag.add(file + ":1:1", "", std::string("cannot read config file: ") + e.what());
    return;
  }
  if (root.IsNull()) {
    diag.add(file + ":1:1", "", "config file is empty");
    return;
  }
  if (!root.IsMap()) {
    diag.add(mark_text(file, root.Mark()), "", "expected a mapping of sections at the top level");
    return;
  }
  auto layer = std::make_shared<Layer>();
  layer->file = file;
  layer->root = root;
  check_duplicates(*layer, root, "", diag);

  chain.insert(canonical);
  if (YAML::Node base = root["base"]) {
    if (!base.IsScalar() || base.Scalar().empty()) {
      diag.add(mark_text(file, base.Mark()), "base", "expected a file path, got " + describe(base));
    } else {
      fs::path base_path = path.parent_path() / base.Scalar();
      load_file_layers(base_path, out, chain, diag, mark_text(file, base.Mark()));
    }
  }
  chain.erase(canonical);
  out.push_back(layer);
}

static void add_override_layer(const std::string& arg, int index, Layers& out, Diagnostics& diag) {
  auto layer = std::make_shared<Layer>();
  layer->file = "<--set #" + std::to_string(index) + ">";
  layer->is_override = true;
  size_t eq = arg.find('=');
  std::string path = arg.substr(0, eq);
  if (eq == std::string::npos || path.empty()) {
    diag.add(layer->file + ":1:1", path, "expected --set key.path=value, got '" + arg + "'");
    return;
  }
  std::vector<std::string> segments;
  size_t start = 0;
  std::string so_far;
  while (true) {
    size_t dot = path.find('.', start);
    std::string seg = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (seg.empty()) {
      diag.add(layer->file + ":1:" + std::to_string(start + 1), path, "empty key segment in --set path");
      return;
    }
    so_far = join_path(so_far, seg);
    layer->key_cols.emplace_back(so_far, static_cast<int>(start + 1));
    segments.push_back(seg);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  layer->value_col = static_cast<int>(eq + 2);
  YAML::Node value;
  try {
    value = YAML::Load(arg.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    diag.add(layer->file + ":1:" + std::to_string(eq + 2), path, "cannot parse value: " + e.msg);
    return;
  }
  // Build {a: {b: {c: value}}} from the innermost key outwards.
  YAML::Node node = value;
  for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
    YAML::Node parent(YAML::NodeType::Map);
    parent[*it] = node;
    node = parent;
  }
  layer->root = node;
  out.push_back(layer);
}

Layers load_layers(const std::string& path, const std::vector<std::string>& overrides,
                   Diagnostics& diag) {
  Layers layers;
  std::set<std::string> chain;
  load_file_layers(path, layers, chain, diag, "");
  for (size_t i = 0; i < overrides.size(); ++i)
    add_override_layer(overrides[i], static_cast<int>(i + 1), layers, diag);
  return layers;
}

// --------------------------------------------------------------------------------- Section

struct Section::State {
  std::string path;  // "" for the root, "train", "model", ...
  // The mapping at `path` in each layer that has one, lowest priority first.
  std::vector<std::pair<std::shared_ptr<const Layer>, YAML::Node>> maps;
  Diagnostics* diag = nullptr;
  YAML::Node resolved;  // shares its tree with the caller's resolved config
  std::vector<std::string> known;

  struct Hit {
    const Layer* layer = nullptr;
    YAML::Node key, value;
  };
  // The winning (last) definition of `key`; layer is null when no layer defines it.
  Hit find(const std::string& key) const {
    for (auto it = maps.rbegin(); it != maps.rend(); ++it) {
      Hit hit;
      for (const auto& kv : it->second) {
        if (kv.first.Scalar() == key) hit = Hit{it->first.get(), kv.first, kv.second};
      }
      if (hit.layer) return hit;
    }
    return {};
  }
  std::string section_where() const {
    if (maps.empty()) return "";
    const auto& [layer, node] = maps.back();
    return where(*layer, node, path, false);
  }
  void report(const Hit& hit, const std::string& key, bool at_value, const std::string& message) {
    std::string key_path = join_path(path, key);
    std::string loc = hit.layer ? where(*hit.layer, at_value ? hit.value : hit.key, key_path, at_value)
                                : section_where();
    diag->add(loc, key_path, message);
  }
};

Section::Section(std::unique_ptr<State> state) : s_(std::move(state)) {}
Section::Section(Section&&) noexcept = default;
Section::~Section() = default;

Section::Section(Layers layers, Diagnostics& diag, YAML::Node* resolved)
    : s_(std::make_unique<State>()) {
  s_->diag = &diag;
  s_->resolved = *resolved;
  for (auto& layer : layers) s_->maps.emplace_back(layer, layer->root);
}

namespace {
// Runs `convert` on the winning value of `key`, reporting a missing or mistyped value.
template <class Convert>
bool bind(Section::State& s, const std::string& key, Need need, const char* expected,
          Convert convert) {
  s.known.push_back(key);
  auto hit = s.find(key);
  if (!hit.layer) {
    if (need == Need::required) s.report(hit, key, false, "missing required key '" + key + "'");
    return false;
  }
  if (hit.value.IsNull()) {
    s.report(hit, key, true, std::string("missing value: expected ") + expected);
    return false;
  }
  std::string problem = convert(hit.value);
  if (!problem.empty()) {
    s.report(hit, key, true, problem);
    return false;
  }
  return true;
}

std::string check_limits(double v, const Limits& lim) {
  if (lim.min && (lim.min_exclusive ? v <= *lim.min : v < *lim.min))
    return "value " + format_number(v) + " out of range: must be " + (lim.min_exclusive ? "> " : ">= ") +
           format_number(*lim.min) + (lim.max ? " and <= " + format_number(*lim.max) : "");
  if (lim.max && v > *lim.max)
    return "value " + format_number(v) + " out of range: must be <= " + format_number(*lim.max) +
           (lim.min ? " and >= " + format_number(*lim.min) : "");
  return "";
}
}  // namespace

void Section::field(const std::string& key, bool& value) {
  bind(*s_, key, Need::optional, "true or false", [&](const YAML::Node& n) -> std::string {
    bool v;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v))
      return "expected true or false, got " + describe(n);
    value = v;
    return "";
  });
  s_->resolved[key] = value;
}

void Section::field(const std::string& key, int64_t& value, Limits limits, Need need) {
  bind(*s_, key, need, "an integer", [&](const YAML::Node& n) -> std::string {
    int64_t v = 0;
    double d = 0;
    if (!n.IsScalar()) return "expected an integer, got " + describe(n);
    if (!YAML::convert<int64_t>::decode(n, v)) {
      // Accept 1e6-style integers; reject 2.5 and words.
      if (!YAML::convert<double>::decode(n, d) || !std::isfinite(d) || d != std::floor(d) ||
          std::fabs(d) > 9e15)
        return "expected an integer, got " + describe(n);
      v = static_cast<int64_t>(d);
    }
    std::string range = check_limits(static_cast<double>(v), limits);
    if (!range.empty()) return range;
    value = v;
    return "";
  });
  s_->resolved[key] = value;
}

// The shortest decimal that reads back as exactly `v` (yaml-cpp writes 17 digits: 0.003 would show
// as 0.0030000000000000001 in `config show` and `runs diff`).
static std::string shortest_decimal(double v) {
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void Section::field(const std::string& key, double& value, Limits limits, Need need) {
  bind(*s_, key, need, "a number", [&](const YAML::Node& n) -> std::string {
    double v = 0;
    bool b;
    // yaml-cpp would read "true" as 1.0; a boolean is never a number here.
    if (!n.IsScalar() || YAML::convert<bool>::decode(n, b) || !YAML::convert<double>::decode(n, v))
      return "expected a number, got " + describe(n);
    if (!std::isfinite(v)) return "expected a finite number, got " + describe(n);
    std::string range = check_limits(v, limits);
    if (!range.empty()) return range;
    value = v;
    return "";
  });
  s_->resolved[key] = shortest_decimal(value);
}

void Section::field(const std::string& key, std::string& value,
                    const std::vector<std::string>& choices, Need need) {
  bind(*s_, key, need, "a string", [&](const YAML::Node& n) -> std::string {
    if (!n.IsScalar()) return "expected a string, got " + describe(n);
    const std::string& v = n.Scalar();
    if (!choices.empty() && std::find(choices.begin(), choices.end(), v) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
      std::string hint = suggest(v, choices);
      return "'" + v + "' is not one of: " + list + (hint.empty() ? "" : "; did you mean '" + hint + "'?");
    }
    value = v;
    return "";
  });
  s_->resolved[key] = value;
}

void Section::field(const std::string& key, std::vector<std::string>& value, Need need) {
  bind(*s_, key, need, "a string or a list of strings", [&](const YAML::Node& n) -> std::string {
    std::vector<std::string> v;
    if (n.IsScalar()) {
      v.push_back(n.Scalar());
    } else if (n.IsSequence()) {
      for (const auto& item : n) {
        if (!item.IsScalar()) return "expected a list of strings, found " + describe(item) + " in it";
        v.push_back(item.Scalar());
      }
    } else {
      return "expected a string or a list of strings, got " + describe(n);
    }
    value = v;
    return "";
  });
  YAML::Node seq(YAML::NodeType::Sequence);
  for (const auto& v : value) seq.push_back(v);
  s_->resolved[key] = seq;
}

Section Section::child(const std::string& key) {
  s_->known.push_back(key);
  auto state = std::make_unique<State>();
  state->path = join_path(s_->path, key);
  state->diag = s_->diag;
  s_->resolved[key] = YAML::Node(YAML::NodeType::Map);
  state->resolved = s_->resolved[key];
  for (const auto& [layer, map] : s_->maps) {
    for (const auto& kv : map) {
      if (kv.first.Scalar() != key || kv.second.IsNull()) continue;
      if (!kv.second.IsMap()) {
        s_->diag->add(where(*layer, kv.second, state->path, true), state->path,
                      "expected a mapping of keys, got " + describe(kv.second));
        continue;
      }
      state->maps.emplace_back(layer, kv.second);
    }
  }
  return Section(std::move(state));
}

std::vector<Section> Section::items(const std::string& key) {
  s_->known.push_back(key);
  std::vector<Section> out;
  auto hit = s_->find(key);
  if (!hit.layer || hit.value.IsNull()) return out;
  std::string list_path = join_path(s_->path, key);
  if (!hit.value.IsSequence()) {
    s_->report(hit, key, true, "expected a list of mappings, got " + describe(hit.value));
    return out;
  }
  s_->resolved[key] = YAML::Node(YAML::NodeType::Sequence);
  std::shared_ptr<const Layer> layer;
  for (const auto& [l, map] : s_->maps)
    if (l.get() == hit.layer) layer = l;
  for (size_t i = 0; i < hit.value.size(); ++i) {
    auto state = std::make_unique<State>();
    state->path = list_path + "[" + std::to_string(i) + "]";
    state->diag = s_->diag;
    s_->resolved[key].push_back(YAML::Node(YAML::NodeType::Map));
    state->resolved = s_->resolved[key][i];
    YAML::Node item = hit.value[i];
    if (item.IsMap()) {
      state->maps.emplace_back(layer, item);
    } else {
      s_->diag->add(where(*layer, item, state->path, true), state->path,
                    "expected a mapping of keys, got " + describe(item));
    }
    out.push_back(Section(std::move(state)));
  }
  return out;
}

bool Section::has(const std::string& key) const { return s_->find(key).layer != nullptr; }

std::string Section::file_of(const std::string& key) const {
  auto hit = s_->find(key);
  if (hit.layer && !hit.layer->is_override) return hit.layer->file;
  for (const auto& [layer, map] : s_->maps)
    if (!layer->is_override) return layer->file;
  return "";
}

void Section::error(const std::string& key, const std::string& message) {
  s_->report(s_->find(key), key, true, message);
}

void Section::finish() {
  for (const auto& [layer, map] : s_->maps) {
    for (const auto& kv : map) {
      std::string key = kv.first.Scalar();
      bool known = std::find(s_->known.begin(), s_->known.end(), key) != s_->known.end();
      if (known || (s_->path.empty() && key == "base")) continue;
      std::string key_path = join_path(s_->path, key);
      std::string hint = suggest(key, s_->known);
      std::string what = s_->path.empty() ? "unknown section '" : "unknown key '";
      s_->diag->add(where(*layer, kv.first, key_path, false), key_path,
                    what + key + "'" + (hint.empty() ? "" : "; did you mean '" + hint + "'?"));
    }
  }
}

std::string suggest(const std::string& word, const std::vector<std::string>& candidates) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  };
  std::string w = lower(word);
  std::string best;
  size_t best_distance = std::max<size_t>(2, w.size() / 3) + 1;  // allow ~1 typo per 3 letters
  for (const auto& cand : candidates) {
    std::string c = lower(cand);
    std::vector<size_t> row(c.size() + 1);
    for (size_t j = 0; j <= c.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= w.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= c.size(); ++j) {
        size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (w[i - 1] == c[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    if (row[c.size()] < best_distance) {
      best_distance = row[c.size()];
      best = cand;
    }
  }
  return best;
}

}  // namespace lmforge::config
