// data/jinja/filters.cpp -- the filters, tests, methods and globals of the subset, over Python's string
// semantics (strip, split, replace, case). Not here: evaluating their arguments (render.cpp), value printing.
#include "data/jinja/filters.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <set>
#include <stdexcept>

namespace lmforge::data::jinja {

namespace {

bool all_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// Python's str.isspace for one code point.
bool py_space(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's strip family: `chars` empty means whitespace.
std::string py_strip(const std::string& s, const ojson& chars, bool left, bool right) {
  std::vector<uint32_t> cps = code_points(s), set;
  if (chars.is_string()) set = code_points(chars.get<std::string>());
  auto strip = [&](uint32_t c) {
    return chars.is_string() ? std::find(set.begin(), set.end(), c) != set.end() : py_space(c);
  };
  size_t b = 0, e = cps.size();
  while (left && b < e && strip(cps[b])) ++b;
  while (right && e > b && strip(cps[e - 1])) --e;
  return utf8(std::vector<uint32_t>(cps.begin() + b, cps.begin() + e));
}

// `at` places a crossed size bound (check_text) while the result grows.
std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count, size_t at) {
  if (from.empty()) {  // Python inserts `to` between every character
    std::string out;
    std::vector<uint32_t> cps = code_points(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        check_text(out.size() + to.size(), at);
        out += to;
        ++done;
      }
      if (i < cps.size()) out += utf8(cps[i]);
    }
    spend(out.size() / kBytesPerUnit, at);
    return out;
  }
  std::string out;
  size_t pos = 0;
  for (int64_t done = 0; count < 0 || done < count; ++done) {
    size_t k = s.find(from, pos);
    if (k == std::string::npos) break;
    check_text(out.size() + (k - pos) + to.size(), at);
    out += s.substr(pos, k - pos) + to;
    pos = k + from.size();
  }
  spend(out.size() / kBytesPerUnit, at);
  return out + s.substr(pos);
}

ojson py_split(const std::string& s, const ojson& sep, int64_t maxsplit) {
  ojson out = ojson::array();
  if (sep.is_null()) {  // runs of whitespace, no empty parts
    std::vector<uint32_t> cps = code_points(s);
    size_t i = 0;
    while (true) {
      while (i < cps.size() && py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && py_space(cps[e - 1])) --e;
        out.push_back(utf8(std::vector<uint32_t>(cps.begin() + i, cps.begin() + e)));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !py_space(cps[j])) ++j;
      out.push_back(utf8(std::vector<uint32_t>(cps.begin() + i, cps.begin() + j)));
      i = j;
    }
    return out;
  }
  std::string d = sep.get<std::string>();
  if (d.empty()) throw std::invalid_argument("empty separator");
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    size_t k = s.find(d, pos);
    if (k == std::string::npos) break;
    out.push_back(s.substr(pos, k - pos));
    pos = k + d.size();
  }
  out.push_back(s.substr(pos));
  return out;
}

// The argument named `name` or at `index`; `fallback` when neither was given.
Value arg(const std::vector<Value>& pos, const Kw& kw, size_t index, const std::string& name, const Value& fallback) {
  for (const auto& [k, v] : kw)
    if (k == name) return v;
  return index < pos.size() ? pos[index] : fallback;
}

void check_args(const Expr& e, const std::vector<Value>& pos, const Kw& kw, size_t max_pos,
                const std::set<std::string>& names) {
  if (pos.size() > max_pos) fail(e.pos, "'" + e.name + "' takes at most " + std::to_string(max_pos) + " arguments");
  for (const auto& [k, v] : kw)
    if (!names.count(k)) fail(e.pos, "unsupported argument '" + k + "' of '" + e.name + "'");
}

// upper/lower/title/capitalize: ASCII only; other letters would need Python's Unicode tables.
std::string change_case(std::string s, const std::string& how, size_t pos) {
  if (!all_ascii(s)) fail(pos, "unsupported: " + how + " of non-ASCII text");
  bool word_start = true;
  for (size_t i = 0; i < s.size(); ++i) {
    char& c = s[i];
    if (how == "upper") c = static_cast<char>(std::toupper(c));
    else if (how == "lower") c = static_cast<char>(std::tolower(c));
    else if (how == "capitalize") c = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
    else {  // jinja2's title: words start after whitespace, '-', '(', '{', '[' or '<'
      bool sep = std::isspace(static_cast<unsigned char>(c)) || std::strchr("-({[<", c);
      c = static_cast<char>(word_start && !sep ? std::toupper(c) : std::tolower(c));
      word_start = sep;
    }
  }
  return s;
}

Value to_number(const std::string& f, const Value& v, const std::vector<Value>& pos, const Kw& kw, const Expr& e) {
  check_args(e, pos, kw, f == "int" ? 2 : 1, {"default", "base"});
  Value dflt = arg(pos, kw, 0, "default", f == "int" ? Value::of(0) : Value::of(0.0));
  if (!v.is_data()) return dflt;
  const ojson& j = v.data;
  if (is_number(j)) return f == "int" ? Value::of(is_int(j) ? as_int(j) : static_cast<int64_t>(as_double(j)))
                                      : Value::of(as_double(j));
  if (!j.is_string()) return dflt;
  std::string s = py_strip(j.get<std::string>(), nullptr, true, true);
  if (!all_ascii(s) || s.empty()) return dflt;
  char* end = nullptr;
  if (f == "int") {
    long long x = std::strtoll(s.c_str(), &end, 10);
    if (*end == 0) return Value::of(static_cast<int64_t>(x));
  }
  double d = std::strtod(s.c_str(), &end);
  if (*end != 0 || s.find_first_of("xXpP") != std::string::npos) return dflt;
  return f == "int" ? Value::of(static_cast<int64_t>(d)) : Value::of(d);
}

}  // namespace

bool known_filter(const std::string& name) {
  static const std::set<std::string> kFilters = {
      "abs", "capitalize", "count", "d", "default", "first", "float", "int", "items", "join", "last", "length",
      "list", "lower", "map", "rejectattr", "replace", "round", "safe", "selectattr", "string", "title",
      "tojson", "trim", "unique", "upper", "select", "reject", "e", "escape_none"};
  return kFilters.count(name) > 0;
}

bool known_test(const std::string& name) {
  static const std::set<std::string> kTests = {
      "defined", "undefined", "none", "string", "number", "mapping", "iterable", "sequence", "true", "false",
      "boolean", "integer", "float", "even", "odd", "divisibleby", "eq", "equalto", "ne", "in", "lower",
      "upper", "callable", "sameas", "lt", "gt", "le", "ge"};
  return kTests.count(name) > 0;
}

bool known_method(const std::string& name) {
  static const std::set<std::string> kMethods = {
      "items", "keys", "values", "get", "strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper",
      "lower", "replace", "title", "capitalize", "count", "find"};
  return kMethods.count(name) > 0;
}

bool known_global(const std::string& name) {
  static const std::set<std::string> kGlobals = {"range", "namespace", "raise_exception", "strftime_now", "dict"};
  return kGlobals.count(name) > 0;
}

Value call_method(const Expr& e, const Value& self, const std::vector<Value>& pos, const Kw& kw) {
  const std::string& m = e.name;
  if (self.is_undefined()) fail(e.pos, "'" + self.name + "' is undefined (its " + m + "() was called)");
  const ojson* j = self.is_data() ? &self.data : nullptr;
  if (j && j->is_object() && (m == "items" || m == "keys" || m == "values" || m == "get")) {
    check_args(e, pos, kw, m == "get" ? 2 : 0, {});
    if (m == "get") {
      if (pos.empty()) fail(e.pos, "get() needs a key");
      std::string key = need_string(pos[0], e.pos, "the key of get()");
      return j->contains(key) ? Value::of((*j)[key]) : pos.size() > 1 ? pos[1] : Value::of(nullptr);
    }
    ojson out = ojson::array();
    for (const auto& [k, v] : j->items())
      out.push_back(m == "items" ? ojson::array({k, v}) : m == "keys" ? ojson(k) : v);
    return Value::of(out);
  }
  if (!j || !j->is_string()) fail(e.pos, "a " + type_name(self) + " has no method " + m + "()");
  std::string s = j->get<std::string>();
  auto str_arg = [&](size_t i, const std::string& what) { return need_string(pos.at(i), e.pos, what); };
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    check_args(e, pos, kw, 1, {});
    ojson chars = pos.empty() ? ojson(nullptr) : need_data(pos[0], e.pos, "the characters to strip");
    return Value::of(py_strip(s, chars, m != "rstrip", m != "lstrip"));
  }
  if (m == "split") {
    check_args(e, pos, kw, 2, {"sep", "maxsplit"});
    Value sep = arg(pos, kw, 0, "sep", Value::of(nullptr)), max = arg(pos, kw, 1, "maxsplit", Value::of(-1));
    const ojson& sj = need_data(sep, e.pos, "the separator of split()");
    if (!sj.is_null() && !sj.is_string()) fail(e.pos, "the separator of split() must be a string");
    if (sj.is_string() && sj.get<std::string>().empty()) fail(e.pos, "split() with an empty separator");
    return Value::of(py_split(s, sj, need_int(max, e.pos, "maxsplit")));
  }
  if (m == "startswith" || m == "endswith") {
    check_args(e, pos, kw, 1, {});
    if (pos.empty()) fail(e.pos, m + "() needs an argument");
    const ojson& p = need_data(pos[0], e.pos, "the argument of " + m + "()");
    ojson options = p.is_array() ? p : ojson::array({p});
    for (const auto& o : options) {
      if (!o.is_string()) fail(e.pos, m + "() takes strings");
      std::string x = o.get<std::string>();
      bool hit = x.size() <= s.size() && (m == "startswith" ? s.compare(0, x.size(), x) == 0
                                                            : s.compare(s.size() - x.size(), x.size(), x) == 0);
      if (hit) return Value::of(true);
    }
    return Value::of(false);
  }
  if (m == "replace") {
    check_args(e, pos, kw, 3, {});
    if (pos.size() < 2) fail(e.pos, "replace() needs two arguments");
    int64_t count = pos.size() > 2 ? need_int(pos[2], e.pos, "the count of replace()") : -1;
    return Value::of(py_replace(s, str_arg(0, "replace()'s old text"), str_arg(1, "replace()'s new text"), count, e.pos));
  }
  if (m == "count" || m == "find") {
    check_args(e, pos, kw, 1, {});
    if (pos.empty()) fail(e.pos, m + "() needs an argument");
    std::string x = str_arg(0, "the argument of " + m + "()");
    if (m == "find") {
      size_t k = s.find(x);
      return Value::of(k == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_points(s.substr(0, k)).size()));
    }
    if (x.empty()) return Value::of(static_cast<int64_t>(code_points(s).size() + 1));
    int64_t n = 0;
    for (size_t k = s.find(x); k != std::string::npos; k = s.find(x, k + x.size())) ++n;
    return Value::of(n);
  }
  check_args(e, pos, kw, 0, {});
  return Value::of(change_case(s, m, e.pos));
}

Value call_global(const Expr& e, const std::vector<Value>& pos, const Kw& kw) {
  if (e.name == "raise_exception") {
    if (pos.empty()) fail(e.pos, "raise_exception() needs a message");
    throw Raised(to_text(pos[0], e.pos));
  }
  if (e.name == "namespace" || e.name == "dict") {
    if (pos.size() > (e.name == "namespace" ? 1u : 0u)) fail(e.pos, e.name + "() takes keyword arguments");
    Value v = Value::of(ojson::object());
    if (!pos.empty()) {
      const ojson& init = need_data(pos[0], e.pos, "the argument of namespace()");
      if (!init.is_object()) fail(e.pos, "namespace() takes a dict or keyword arguments");
      v.data = init;
    }
    for (const auto& [k, x] : kw) v.data[k] = need_data(x, e.pos, "a namespace value");
    if (e.name == "dict") return v;
    v.kind = Value::Kind::ns;
    v.ns = std::make_shared<ojson>(std::move(v.data));
    return v;
  }
  if (e.name == "range") {
    check_args(e, pos, kw, 3, {});
    if (pos.empty()) fail(e.pos, "range() needs an argument");
    int64_t a = 0, b, step = 1;
    if (pos.size() == 1) {
      b = need_int(pos[0], e.pos, "range()'s argument");
    } else {
      a = need_int(pos[0], e.pos, "range()'s start");
      b = need_int(pos[1], e.pos, "range()'s stop");
      if (pos.size() > 2) step = need_int(pos[2], e.pos, "range()'s step");
    }
    if (step == 0) fail(e.pos, "range() step cannot be zero");
    ojson out = ojson::array();
    for (int64_t i = a; step > 0 ? i < b : i > b; i += step) {
      if (out.size() >= 100000) fail(e.pos, "range() too big (the sandbox allows 100000 items)");
      out.push_back(i);
    }
    return Value::of(out);
  }
  // strftime_now(format): the local time now
  check_args(e, pos, kw, 1, {});
  if (pos.empty()) fail(e.pos, "strftime_now() needs a format");
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[256];
  size_t n = std::strftime(buf, sizeof buf, need_string(pos[0], e.pos, "strftime_now()'s format").c_str(), &tm);
  return Value::of(std::string(buf, n));
}

bool run_test(const std::string& name, const Value& v, const std::vector<Value>& args, size_t pos) {
  const ojson* j = v.is_data() ? &v.data : nullptr;
  auto need_arg = [&]() -> const Value& {
    if (args.empty()) fail(pos, "the test '" + name + "' needs an argument");
    return args[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "callable") return v.kind == Value::Kind::macro;
  if (name == "iterable" || name == "sequence")
    return v.is_undefined() || (j && (j->is_string() || j->is_array() || j->is_object()));
  if (!j) return false;  // undefined, a namespace or a macro: none of the tests below holds
  if (name == "none") return j->is_null();
  if (name == "string") return j->is_string();
  if (name == "number") return is_number(*j);
  if (name == "mapping") return j->is_object();
  if (name == "true") return j->is_boolean() && j->get<bool>();
  if (name == "false") return j->is_boolean() && !j->get<bool>();
  if (name == "boolean") return j->is_boolean();
  if (name == "integer") return j->is_number_integer();
  if (name == "float") return j->is_number_float();
  if (name == "lower" || name == "upper") {
    if (!j->is_string()) return false;
    std::string s = j->get<std::string>();
    return change_case(s, name, pos) == s;
  }
  if (name == "even" || name == "odd" || name == "divisibleby") {
    int64_t x = need_int(v, pos, "the value tested " + name);
    int64_t d = name == "divisibleby" ? need_int(need_arg(), pos, "the divisor") : 2;
    if (d == 0) fail(pos, "divisibleby 0");
    bool divisible = x % d == 0;
    return name == "odd" ? !divisible : divisible;
  }
  if (name == "sameas") {
    const ojson& o = need_data(need_arg(), pos, "the argument of sameas");
    return (j->is_null() || j->is_boolean()) && j->type() == o.type() && *j == o;
  }
  static const std::map<std::string, std::string> ops = {{"eq", "=="}, {"equalto", "=="}, {"ne", "!="},
                                                         {"lt", "<"},  {"gt", ">"},       {"le", "<="},
                                                         {"ge", ">="}, {"in", "in"}};
  return compare(v, ops.at(name), need_arg(), pos);
}

Value apply_filter(const Expr& e, const std::string& f, const Value& v, const std::vector<Value>& pos, const Kw& kw) {
  size_t at = e.pos;
  if (f == "safe") return v;
  if (f == "default" || f == "d") {
    check_args(e, pos, kw, 2, {"default_value", "boolean"});
    bool boolean = truthy(arg(pos, kw, 1, "boolean", Value::of(false)));
    if (v.is_undefined() || (boolean && !truthy(v))) return arg(pos, kw, 0, "default_value", Value::of(""));
    return v;
  }
  if (f == "string") return Value::of(to_text(v, at));
  if (f == "trim") {
    check_args(e, pos, kw, 1, {"chars"});
    Value chars = arg(pos, kw, 0, "chars", Value::of(nullptr));
    return Value::of(py_strip(to_text(v, at), need_data(chars, at, "trim's characters"), true, true));
  }
  if (f == "upper" || f == "lower" || f == "title" || f == "capitalize") return Value::of(change_case(to_text(v, at), f, at));
  if (f == "replace") {
    check_args(e, pos, kw, 3, {"old", "new", "count"});
    if (pos.size() < 2) fail(at, "replace needs two arguments");
    Value count = arg(pos, kw, 2, "count", Value::of(nullptr));
    return Value::of(py_replace(to_text(v, at), need_string(pos[0], at, "replace's old text"),
                                need_string(pos[1], at, "replace's new text"),
                                count.is_data() && count.data.is_null() ? -1 : need_int(count, at, "replace's count"), at));
  }
  if (f == "length" || f == "count") {
    if (v.is_undefined()) return Value::of(0);
    const ojson& j = need_data(v, at, "the value of " + f);
    if (j.is_string()) return Value::of(static_cast<int64_t>(code_points(j.get<std::string>()).size()));
    if (j.is_array() || j.is_object()) return Value::of(static_cast<int64_t>(j.size()));
    fail(at, "a " + type_name(v) + " has no length");
  }
  if (f == "tojson") {
    check_args(e, pos, kw, 0, {"indent", "sort_keys", "ensure_ascii"});
    for (const auto& [k, x] : kw)
      if (k == "ensure_ascii" && truthy(x)) fail(at, "unsupported: tojson(ensure_ascii=true)");
    Value indent = arg(pos, kw, 99, "indent", Value::of(nullptr));
    bool has_indent = !(indent.is_data() && indent.data.is_null());
    if (has_indent && need_int(indent, at, "indent") > 64) fail(at, "unsupported: tojson indent over 64");
    std::string out;
    to_json(need_data(v, at, "the value of tojson"), has_indent ? static_cast<int>(need_int(indent, at, "indent")) : -1,
            truthy(arg(pos, kw, 99, "sort_keys", Value::of(false))), 0, out);
    check_text(out.size(), at);
    spend(out.size() / kBytesPerUnit, at);
    return Value::of(out);
  }
  if (f == "abs") {
    const ojson& j = need_data(v, at, "the value of abs");
    if (!is_number(j)) fail(at, "abs of a " + type_name(v));
    return is_int(j) ? Value::of(std::llabs(as_int(j))) : Value::of(std::fabs(as_double(j)));
  }
  if (f == "round") {
    check_args(e, pos, kw, 2, {"precision", "method"});
    int64_t precision = need_int(arg(pos, kw, 0, "precision", Value::of(0)), at, "round's precision");
    std::string method = need_string(arg(pos, kw, 1, "method", Value::of("common")), at, "round's method");
    const ojson& j = need_data(v, at, "the value of round");
    if (!is_number(j)) fail(at, "round of a " + type_name(v));
    double scale = std::pow(10.0, static_cast<double>(precision)), x = as_double(j) * scale;
    double r = method == "common" ? std::nearbyint(x) : method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : NAN;
    if (std::isnan(r)) fail(at, "round's method must be common, floor or ceil");
    return Value::of(r / scale);
  }
  if (f == "int" || f == "float") return to_number(f, v, pos, kw, e);
  if (f == "first" || f == "last" || f == "list" || f == "unique") {
    std::vector<Value> items = iterate(v, at);
    if (f == "first") return items.empty() ? Value::undefined("first of an empty sequence") : items.front();
    if (f == "last") return items.empty() ? Value::undefined("last of an empty sequence") : items.back();
    ojson out = ojson::array();
    std::vector<ojson> seen;
    for (const auto& x : items) {
      ojson key = x.data.is_string() && all_ascii(x.data.get<std::string>())
                      ? ojson(change_case(x.data.get<std::string>(), "lower", at))
                      : x.data;
      if (f == "unique") {
        spend(seen.size() / 16 + 1, at);  // each item is compared with those kept
        if (x.data.is_string() && !all_ascii(x.data.get<std::string>())) fail(at, "unsupported: unique of non-ASCII strings");
        if (std::any_of(seen.begin(), seen.end(), [&](const ojson& s) { return equal(s, key); })) continue;
        seen.push_back(key);
      }
      out.push_back(x.data);
    }
    return Value::of(out);
  }
  if (f == "items") {
    if (v.is_undefined()) return Value::of(ojson::array());
    const ojson& j = need_data(v, at, "the value of items");
    if (!j.is_object()) fail(at, "items of a " + type_name(v));
    ojson out = ojson::array();
    for (const auto& [k, x] : j.items()) out.push_back(ojson::array({k, x}));
    return Value::of(out);
  }
  if (f == "join") {
    check_args(e, pos, kw, 2, {"d", "attribute"});
    std::string sep = need_string(arg(pos, kw, 0, "d", Value::of("")), at, "join's separator");
    Value attribute = arg(pos, kw, 1, "attribute", Value::of(nullptr));
    std::string out;
    bool first = true;
    for (Value x : iterate(v, at)) {
      if (!(attribute.is_data() && attribute.data.is_null()))
        x = attribute_path(x, to_text(attribute, at), at);
      std::string piece = to_text(x, at);
      check_text(out.size() + sep.size() + piece.size(), at);
      out += (first ? "" : sep) + piece;
      first = false;
    }
    spend(out.size() / kBytesPerUnit, at);
    return Value::of(out);
  }
  if (f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
    bool by_attr = f == "selectattr" || f == "rejectattr", keep_if = f == "selectattr" || f == "select";
    if (!kw.empty()) fail(at, f + " takes no keyword arguments");
    size_t t = by_attr ? 1 : 0;
    if (by_attr && pos.empty()) fail(at, f + " needs an attribute name");
    std::string test_name = pos.size() > t ? need_string(pos[t], at, f + "'s test") : "";
    if (!test_name.empty() && !known_test(test_name)) fail(at, "unsupported test '" + test_name + "'");
    std::vector<Value> test_args(pos.begin() + static_cast<std::ptrdiff_t>(std::min(pos.size(), t + 1)), pos.end());
    ojson out = ojson::array();
    for (const Value& x : iterate(v, at)) {
      Value subject = by_attr ? attribute_path(x, need_string(pos[0], at, f + "'s attribute"), at) : x;
      bool pass = test_name.empty() ? truthy(subject) : run_test(test_name, subject, test_args, at);
      if (pass == keep_if) out.push_back(x.data);
    }
    return Value::of(out);
  }
  if (f == "map") {
    ojson out = ojson::array();
    std::vector<Value> items = iterate(v, at);
    if (pos.empty()) {
      check_args(e, pos, kw, 0, {"attribute", "default"});
      Value attribute = arg(pos, kw, 99, "attribute", Value::undefined("attribute"));
      if (attribute.is_undefined()) fail(at, "map needs a filter name or attribute=");
      for (const Value& x : items) {
        Value y = attribute_path(x, to_text(attribute, at), at);
        if (y.is_undefined()) y = arg(pos, kw, 99, "default", y);
        out.push_back(need_data(y, at, "a mapped value"));
      }
      return Value::of(out);
    }
    std::string name = need_string(pos[0], at, "map's filter");
    if (!known_filter(name) || name == "map") fail(at, "unsupported filter '" + name + "' in map");
    std::vector<Value> rest(pos.begin() + 1, pos.end());
    for (const Value& x : items) out.push_back(need_data(apply_filter(e, name, x, rest, kw), at, "a mapped value"));
    return Value::of(out);
  }
  fail(at, "unsupported filter '" + f + "'");
}

}  // namespace lmforge::data::jinja
