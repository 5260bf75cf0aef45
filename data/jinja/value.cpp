// data/jinja/value.cpp -- Python semantics of template values: truth, equality, comparison, item access,
// str()/repr() printing and HF's tojson. Not here: filters and methods (filters.cpp), arithmetic (render.cpp).
#include "data/jinja/value.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "data/utf8.h"

namespace lmforge::data::jinja {

void fail(size_t pos, const std::string& msg) { throw RenderError(msg, pos); }

std::vector<uint32_t> code_points(const std::string& s) { return utf8_decode(s); }
std::string utf8(uint32_t cp) { return utf8_encode(cp); }

std::string utf8(const std::vector<uint32_t>& cps) {
  std::string s;
  for (uint32_t c : cps) s += utf8(c);
  return s;
}

namespace {

// Python's float repr: the shortest digits that round-trip; exponent form below 1e-4 and from 1e16.
std::string py_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  int prec = 1;
  for (; prec < 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
  std::string s(buf);
  size_t e = s.find('e');
  int exp = std::stoi(s.substr(e + 1));
  std::string digits;
  bool neg = s[0] == '-';
  for (size_t i = neg ? 1 : 0; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = neg ? "-" : "";
  if (exp < -4 || exp >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return out + eb;
  }
  if (exp < 0) return out + "0." + std::string(-exp - 1, '0') + digits;
  if (static_cast<int>(digits.size()) <= exp + 1) return out + digits + std::string(exp + 1 - digits.size(), '0') + ".0";
  return out + digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
}

std::string py_repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (uint32_t c : code_points(s)) {
    char buf[16];
    if (c == '\\' || c == static_cast<uint32_t>(q)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else if (c == 0x2028 || c == 0x2029 || (c >= 0x200B && c <= 0x200F) || c == 0xFEFF) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += utf8(c);
    }
  }
  return out + q;
}

std::string py_repr(const ojson& j);

}  // namespace

std::string py_str(const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::string: return j.get<std::string>();
    case ojson::value_t::null: return "None";
    case ojson::value_t::boolean: return j.get<bool>() ? "True" : "False";
    case ojson::value_t::number_integer: return std::to_string(j.get<int64_t>());
    case ojson::value_t::number_unsigned: return std::to_string(j.get<uint64_t>());
    case ojson::value_t::number_float: return py_float(j.get<double>());
    default: return py_repr(j);
  }
}

namespace {

std::string py_repr(const ojson& j) {
  if (j.is_string()) return py_repr_string(j.get<std::string>());
  if (j.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < j.size(); ++i) out += (i ? ", " : "") + py_repr(j[i]);
    return out + "]";
  }
  if (j.is_object()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, v] : j.items()) {
      out += (first ? "" : ", ") + py_repr_string(k) + ": " + py_repr(v);
      first = false;
    }
    return out + "}";
  }
  return py_str(j);
}

}  // namespace

void to_json(const ojson& j, int indent, bool sort_keys, int depth, std::string& out) {
  auto newline = [&](int d) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent * d), ' ');
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  if (j.is_array()) {
    if (j.empty()) {
      out += "[]";
      return;
    }
    out += "[";
    for (size_t i = 0; i < j.size(); ++i) {
      if (i) out += item_sep;
      newline(depth + 1);
      to_json(j[i], indent, sort_keys, depth + 1, out);
    }
    newline(depth);
    out += "]";
  } else if (j.is_object()) {
    if (j.empty()) {
      out += "{}";
      return;
    }
    std::vector<std::string> keys;
    for (const auto& [k, v] : j.items()) keys.push_back(k);
    if (sort_keys) std::sort(keys.begin(), keys.end());
    out += "{";
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i) out += item_sep;
      newline(depth + 1);
      out += ojson(keys[i]).dump(-1, ' ', false) + ": ";
      to_json(j.at(keys[i]), indent, sort_keys, depth + 1, out);
    }
    newline(depth);
    out += "}";
  } else if (j.is_number_float()) {
    double d = j.get<double>();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : py_float(d);
  } else {
    out += j.dump(-1, ' ', false);  // strings escape as json.dumps(ensure_ascii=False) does
  }
}

bool is_number(const ojson& j) { return j.is_number() || j.is_boolean(); }
double as_double(const ojson& j) { return j.is_boolean() ? (j.get<bool>() ? 1.0 : 0.0) : j.get<double>(); }
bool is_int(const ojson& j) { return j.is_number_integer() || j.is_boolean(); }
int64_t as_int(const ojson& j) { return j.is_boolean() ? (j.get<bool>() ? 1 : 0) : j.get<int64_t>(); }

bool truthy(const Value& v) {
  if (v.kind != Value::Kind::data) return v.kind != Value::Kind::undefined;
  const ojson& j = v.data;
  if (j.is_null()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_float()) return j.get<double>() != 0.0;
  if (j.is_number()) return j.get<int64_t>() != 0;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();  // json::empty() is false for strings
  if (j.is_array() || j.is_object()) return !j.empty();
  return true;
}

bool equal(const ojson& a, const ojson& b) {
  if (is_number(a) && is_number(b)) {
    if (is_int(a) && is_int(b)) return as_int(a) == as_int(b);
    return as_double(a) == as_double(b);
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!equal(a[i], b[i])) return false;
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (const auto& [k, v] : a.items())
      if (!b.contains(k) || !equal(v, b.at(k))) return false;
    return true;
  }
  return a == b;
}

bool equal(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (!a.is_data() || !b.is_data()) return a.ns == b.ns && a.macro == b.macro && a.kind == b.kind;
  return equal(a.data, b.data);
}

std::string type_name(const Value& v) {
  if (v.is_undefined()) return "undefined";
  if (v.kind == Value::Kind::ns) return "namespace";
  if (v.kind == Value::Kind::macro) return "macro";
  switch (v.data.type()) {
    case ojson::value_t::null: return "none";
    case ojson::value_t::boolean: return "boolean";
    case ojson::value_t::string: return "string";
    case ojson::value_t::array: return "list";
    case ojson::value_t::object: return "dict";
    case ojson::value_t::number_float: return "float";
    default: return "integer";
  }
}

std::string to_text(const Value& v, size_t pos) {
  if (v.is_undefined()) return "";
  if (!v.is_data()) fail(pos, "cannot print a " + type_name(v));
  return py_str(v.data);
}

std::vector<Value> iterate(const Value& v, size_t pos) {
  std::vector<Value> items;
  if (v.is_undefined()) return items;
  if (!v.is_data()) fail(pos, "a " + type_name(v) + " is not iterable");
  if (v.data.is_array()) {
    spend(v.data.size() * sizeof(Value) / kBytesPerUnit, pos);
    for (const auto& x : v.data) items.push_back(Value::of(x));
  } else if (v.data.is_object()) {
    for (const auto& [k, x] : v.data.items()) items.push_back(Value::of(k));
  } else if (v.data.is_string()) {
    std::vector<uint32_t> cps = code_points(v.data.get<std::string>());
    check_items(cps.size(), pos);
    spend(cps.size() * sizeof(Value) / kBytesPerUnit, pos);
    for (uint32_t c : cps) items.push_back(Value::of(utf8(c)));
  } else {
    fail(pos, "a " + type_name(v) + " is not iterable");
  }
  return items;
}

const ojson& need_data(const Value& v, size_t pos, const std::string& what) {
  if (v.is_undefined()) fail(pos, "'" + v.name + "' is undefined (used as " + what + ")");
  if (!v.is_data()) fail(pos, "unsupported: a " + type_name(v) + " as " + what);
  return v.data;
}

std::string need_string(const Value& v, size_t pos, const std::string& what) {
  const ojson& j = need_data(v, pos, what);
  if (!j.is_string()) fail(pos, what + " must be a string, not a " + type_name(v));
  return j.get<std::string>();
}

int64_t need_int(const Value& v, size_t pos, const std::string& what) {
  const ojson& j = need_data(v, pos, what);
  if (!is_int(j)) fail(pos, what + " must be an integer, not a " + type_name(v));
  return as_int(j);
}

Value get_attr(const Value& obj, const std::string& name, size_t pos) {
  if (obj.is_undefined()) fail(pos, "'" + obj.name + "' is undefined (its '" + name + "' was asked for)");
  if (obj.kind == Value::Kind::ns) return obj.ns->contains(name) ? Value::of((*obj.ns)[name]) : Value::undefined(name);
  if (obj.is_data() && obj.data.is_object() && obj.data.contains(name)) return Value::of(obj.data[name]);
  return Value::undefined(name);
}

Value get_item(const Value& obj, const Value& key, size_t pos) {
  if (obj.is_undefined()) fail(pos, "'" + obj.name + "' is undefined (an item of it was asked for)");
  if (key.is_data() && key.data.is_string()) return get_attr(obj, key.data.get<std::string>(), pos);
  if (!obj.is_data() || !key.is_data() || !is_int(key.data)) return Value::undefined("an item");
  int64_t i = as_int(key.data);
  if (obj.data.is_array()) {
    int64_t n = static_cast<int64_t>(obj.data.size());
    if (i < 0) i += n;
    return i >= 0 && i < n ? Value::of(obj.data[static_cast<size_t>(i)]) : Value::undefined("an item");
  }
  if (obj.data.is_string()) {
    std::vector<uint32_t> cps = code_points(obj.data.get<std::string>());
    int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    return i >= 0 && i < n ? Value::of(utf8(cps[static_cast<size_t>(i)])) : Value::undefined("an item");
  }
  return Value::undefined("an item");
}

Value attribute_path(Value v, const std::string& path, size_t pos) {
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && part.size() <= 18 && std::all_of(part.begin(), part.end(), ::isdigit);
    v = digits ? get_item(v, Value::of(std::stoll(part)), pos) : get_attr(v, part, pos);
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

bool compare(const Value& av, const std::string& op, const Value& bv, size_t pos) {
  if (op == "==") return equal(av, bv);
  if (op == "!=") return !equal(av, bv);
  if (op == "in" || op == "not in") {
    bool found = false;
    if (bv.is_undefined()) {
      found = false;
    } else {
      const ojson& b = need_data(bv, pos, "the right side of 'in'");
      if (b.is_string()) {
        found = b.get<std::string>().find(need_string(av, pos, "the left side of 'in' a string")) != std::string::npos;
      } else if (b.is_array()) {
        for (const auto& x : b) found = found || (av.is_data() && equal(av.data, x));
      } else if (b.is_object()) {
        found = av.is_data() && av.data.is_string() && b.contains(av.data.get<std::string>());
      } else {
        fail(pos, "'in' needs a string, list or dict on its right, not a " + type_name(bv));
      }
    }
    return op == "in" ? found : !found;
  }
  const ojson& a = need_data(av, pos, "an operand of " + op);
  const ojson& b = need_data(bv, pos, "an operand of " + op);
  int c;
  if (is_number(a) && is_number(b)) {
    double x = as_double(a), y = as_double(b);
    c = x < y ? -1 : x > y ? 1 : 0;
  } else if (a.is_string() && b.is_string()) {
    c = a.get<std::string>().compare(b.get<std::string>());
  } else {
    fail(pos, "'" + op + "' not supported between a " + type_name(av) + " and a " + type_name(bv));
  }
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

}  // namespace lmforge::data::jinja
