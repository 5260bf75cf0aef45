// data/chat_template.cpp -- a hand-written interpreter for the Jinja2 subset chat templates use (no
// Debian package offers Jinja for C++): lexer, parser into a tree, renderer over JSON. Not here: tokenizing.
//
// Supported: {{ }}, {% %}, {# #}, whitespace control (-, +) with trim_blocks and lstrip_blocks;
// if/elif/else, for (else, loop filter, tuple unpacking, loop.*), break/continue, set (names,
// ns.attr, blocks), macro, generation; literals, lists, dicts, tuples, attribute/item access,
// slices, calls, filters, tests, not/and/or, comparisons, in, ~, + - * / // % **, a if c else b.
// Everything else (include, extends, call blocks, unknown filters/tests/methods) is an error naming it.
// Known difference: tuples are lists here, so printing one whole shows ['a', 1] where Python shows ('a', 1).
#include "data/chat_template.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "core/files.h"
#include "data/utf8.h"
#include "core/digest.h"
#include "core/errors.h"

namespace lmforge::data {

using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------- values

struct Macro;

// A Jinja value: undefined, JSON data, a namespace() (shared, mutable) or a macro.
struct Value {
  enum class Kind { undefined, data, ns, macro } kind = Kind::undefined;
  ojson data;
  std::shared_ptr<ojson> ns;
  const Macro* macro = nullptr;
  std::string name;  // undefined: what was looked up, for errors

  static Value of(ojson j) {
    Value v;
    v.kind = Kind::data;
    v.data = std::move(j);
    return v;
  }
  static Value undefined(std::string name) {
    Value v;
    v.name = std::move(name);
    return v;
  }
  bool is_undefined() const { return kind == Kind::undefined; }
  bool is_data() const { return kind == Kind::data; }
};

struct RenderError : std::runtime_error {  // a runtime error at a position, turned into InputError
  size_t pos;
  RenderError(const std::string& msg, size_t p) : std::runtime_error(msg), pos(p) {}
};
struct Raised : std::runtime_error {  // raise_exception(msg)
  using std::runtime_error::runtime_error;
};

std::vector<uint32_t> code_points(const std::string& s) { return utf8_decode(s); }
std::string utf8(uint32_t cp) { return utf8_encode(cp); }

std::string utf8(const std::vector<uint32_t>& cps) {
  std::string s;
  for (uint32_t c : cps) s += utf8(c);
  return s;
}

// Python's str.isspace for one code point.
bool py_space(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

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

// Python's str() of a value, as {{ }} prints it.
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

// HF's tojson: json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys).
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

// ---------------------------------------------------------------- lexer

enum class T { text, var_begin, var_end, block_begin, block_end, name, integer, floating, string, op, eof };

struct Token {
  T type;
  std::string s;  // text, name, string value or operator
  int64_t i = 0;
  double f = 0;
  size_t pos = 0;
};

class Lexer {
 public:
  Lexer(const std::string& src, const std::function<std::string(size_t)>& where) : src_(src), where_(where) {}

  std::vector<Token> run() {
    bool line_starting = true;
    size_t pos = 0, n = src_.size();
    while (pos < n) {
      size_t k = pos;
      for (;;) {
        k = src_.find('{', k);
        if (k == std::string::npos || k + 1 >= n) {
          k = std::string::npos;
          break;
        }
        char c = src_[k + 1];
        if (c == '{' || c == '%' || c == '#') break;
        ++k;
      }
      std::string text = src_.substr(pos, k == std::string::npos ? std::string::npos : k - pos);
      if (k == std::string::npos) {
        emit_text(text, pos);
        break;
      }
      char kind = src_[k + 1];
      char sign = k + 2 < n ? src_[k + 2] : 0;
      if (sign == '-') {
        size_t e = text.find_last_not_of(" \t\n\r\v\f");
        text = e == std::string::npos ? "" : text.substr(0, e + 1);
      } else if (sign != '+' && kind != '{') {
        size_t l = text.rfind('\n');
        l = l == std::string::npos ? 0 : l + 1;
        if ((l > 0 || line_starting) && l < text.size() &&
            text.find_first_not_of(" \t\r\v\f", l) == std::string::npos)
          text = text.substr(0, l);
      }
      emit_text(text, pos);
      size_t start = k + 2 + (sign == '-' || sign == '+' ? 1 : 0);
      if (kind == '#') {
        size_t e = src_.find("#}", start);
        if (e == std::string::npos) fail(k, "the comment is never closed ('#}' missing)");
        pos = after_end(e + 2, e > start && src_[e - 1] == '-', e > start && src_[e - 1] == '+', true);
      } else {
        tokens_.push_back({kind == '{' ? T::var_begin : T::block_begin, "", 0, 0, k});
        pos = lex_tag(start, kind);
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    tokens_.push_back({T::eof, "", 0, 0, n});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(size_t pos, const std::string& msg) { throw InputError(where_(pos) + ": " + msg); }

  void emit_text(const std::string& text, size_t pos) {
    if (!text.empty()) tokens_.push_back({T::text, text, 0, 0, pos});
  }

  // The position after a tag's end: `-` strips following whitespace, else trim_blocks drops one newline.
  size_t after_end(size_t pos, bool minus, bool plus, bool block) {
    if (minus) {
      while (pos < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos]))) ++pos;
    } else if (block && !plus && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
    }
    return pos;
  }

  size_t lex_tag(size_t pos, char kind) {
    const std::string end = kind == '{' ? "}}" : "%}";
    int depth = 0;
    size_t n = src_.size();
    while (true) {
      while (pos < n && std::isspace(static_cast<unsigned char>(src_[pos]))) ++pos;
      if (pos >= n) fail(pos, std::string("the tag is never closed ('") + end + "' missing)");
      if (depth == 0) {
        bool minus = src_.compare(pos, 3, "-" + end) == 0, plus = kind == '%' && src_.compare(pos, 3, "+" + end) == 0;
        if (minus || plus || src_.compare(pos, 2, end) == 0) {
          tokens_.push_back({kind == '{' ? T::var_end : T::block_end, "", 0, 0, pos});
          size_t after = pos + 2 + (minus || plus ? 1 : 0);
          return after_end(after, minus, plus, kind == '%');
        }
      }
      char c = src_[pos];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos;
        while (e < n && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        tokens_.push_back({T::name, src_.substr(pos, e - pos), 0, 0, pos});
        pos = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = lex_number(pos);
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "/", "*", "%", "~", "[", "]", "(",
                                    ")", "{", "}", "<", ">", "=", ".", ":", "|", ","};
        const char* found = nullptr;
        for (const char* op : ops)
          if (src_.compare(pos, std::strlen(op), op) == 0) {
            found = op;
            break;
          }
        if (!found) fail(pos, std::string("unexpected character '") + c + "'");
        std::string op(found);
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) fail(pos, "unexpected '" + op + "'");
          --depth;
        }
        tokens_.push_back({T::op, op, 0, 0, pos});
        pos += op.size();
      }
    }
  }

  size_t lex_number(size_t pos) {
    size_t e = pos;
    std::string digits;
    bool is_float = false;
    auto take_digits = [&] {
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_'))
        if (src_[e++] != '_') digits += src_[e - 1];
    };
    take_digits();
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      digits += src_[e++];
      take_digits();
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
        is_float = true;
        digits += src_.substr(e, x - e);
        e = x;
        take_digits();
      }
    }
    Token t{is_float ? T::floating : T::integer, digits, 0, 0, pos};
    if (is_float) t.f = std::strtod(digits.c_str(), nullptr);
    else if (digits.size() > 18) fail(pos, "integer literal too large");
    else t.i = std::stoll(digits);
    tokens_.push_back(t);
    return e;
  }

  // Python string-literal escapes, as Jinja2 decodes them.
  size_t lex_string(size_t pos) {
    char q = src_[pos];
    std::string value;
    size_t e = pos + 1;
    while (true) {
      if (e >= src_.size()) fail(pos, "the string literal is never closed");
      char c = src_[e];
      if (c == q) break;
      if (c != '\\' || e + 1 >= src_.size()) {
        value += c;
        ++e;
        continue;
      }
      char x = src_[e + 1];
      e += 2;
      static const std::map<char, char> simple = {{'n', '\n'}, {'t', '\t'}, {'r', '\r'}, {'\\', '\\'}, {'\'', '\''},
                                                  {'"', '"'},  {'a', '\a'}, {'b', '\b'}, {'f', '\f'},  {'v', '\v'},
                                                  {'0', '\0'}, {'\n', 0}};
      if (x == 'x' || x == 'u' || x == 'U') {
        size_t len = x == 'x' ? 2 : x == 'u' ? 4 : 8;
        std::string hex = src_.substr(e, len);
        if (hex.size() != len || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
          fail(e - 2, "a \\" + std::string(1, x) + " escape needs " + std::to_string(len) + " hex digits");
        value += utf8(static_cast<uint32_t>(std::stoul(hex, nullptr, 16)));
        e += len;
      } else if (simple.count(x)) {
        if (x != '\n') value += simple.at(x);
      } else {
        value += '\\';
        value += x;
      }
    }
    tokens_.push_back({T::string, value, 0, 0, pos});
    return e + 1;
  }

  const std::string& src_;
  std::function<std::string(size_t)> where_;
  std::vector<Token> tokens_;
};


// ---------------------------------------------------------------- tree

struct Expr;
using ExprP = std::shared_ptr<const Expr>;

struct Expr {
  enum class K {
    literal, name, list, dict, tuple, attr, item, slice, call, filter, test,
    neg, pos, binary, cond, and_, or_, not_, compare
  };
  K k;
  size_t pos = 0;
  ojson value;                // literal
  std::string name;           // name, attr, call (callee name or method), filter, test, binary op
  std::vector<ExprP> args;    // operands; for call/filter/test: [subject?, positional args...]
  std::vector<std::pair<std::string, ExprP>> kwargs;
  std::vector<std::string> ops;  // compare: one per operand after the first ("==", "in", "not in", ...)
  bool negated = false;       // test: "is not"
};

struct Macro;

}  // namespace

struct TemplateNode {
  enum class K { body, text, output, if_, for_, set, set_block, macro, break_, continue_ };
  K k = K::body;
  size_t pos = 0;
  std::string text;                          // text
  ExprP expr;                                // output, set value, for iterable
  std::vector<std::pair<ExprP, std::vector<TemplateNode>>> branches;  // if/elif/else (else: null)
  std::vector<std::string> targets;          // for / set: names (set ns.attr: {ns, attr} with attr_target)
  bool attr_target = false;
  ExprP filter;                              // for ... if filter
  std::vector<TemplateNode> body, else_body;
  std::vector<std::string> params;           // macro
  std::vector<ExprP> defaults;               // macro: one per param, null when none
};

namespace {

struct Macro {
  const TemplateNode* node;
};

const std::set<std::string> kFilters = {
    "abs",     "capitalize", "count",  "d",      "default", "first",      "float",  "int",   "items", "join",
    "last",    "length",     "list",   "lower",  "map",     "rejectattr", "replace", "round", "safe",  "selectattr",
    "string",  "title",      "tojson", "trim",   "unique",  "upper",      "select", "reject", "e",     "escape_none"};
const std::set<std::string> kTests = {"defined", "undefined", "none",    "string",  "number", "mapping", "iterable",
                                      "sequence", "true",     "false",   "boolean", "integer", "float",  "even",
                                      "odd",     "divisibleby", "eq",   "equalto", "ne",      "in",     "lower",
                                      "upper",   "callable",  "sameas", "lt",      "gt",      "le",     "ge"};
const std::set<std::string> kMethods = {"items", "keys",  "values", "get",  "strip",      "lstrip",  "rstrip",
                                        "split", "startswith", "endswith", "upper", "lower", "replace", "title",
                                        "capitalize", "count", "find"};
const std::set<std::string> kGlobals = {"range", "namespace", "raise_exception", "strftime_now", "dict"};

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::function<std::string(size_t)>& where)
      : t_(std::move(tokens)), where_(where) {}

  std::vector<TemplateNode> parse_template() {
    std::vector<TemplateNode> body = parse_body({});
    if (cur().type != T::eof) fail(cur().pos, "unexpected '" + cur().s + "'");
    return body;
  }

 private:
  const Token& cur() const { return t_[i_]; }
  const Token& next() { return t_[i_++]; }
  [[noreturn]] void fail(size_t pos, const std::string& msg) const { throw InputError(where_(pos) + ": " + msg); }
  bool is_op(const std::string& op) const { return cur().type == T::op && cur().s == op; }
  bool is_name(const std::string& n) const { return cur().type == T::name && cur().s == n; }
  void expect_op(const std::string& op) {
    if (!is_op(op)) fail(cur().pos, "expected '" + op + "'" + found());
    ++i_;
  }
  void expect_name(const std::string& n) {
    if (!is_name(n)) fail(cur().pos, "expected '" + n + "'" + found());
    ++i_;
  }
  std::string found() const {
    switch (cur().type) {
      case T::eof: return ", found the end of the template";
      case T::block_end: return ", found the end of the tag";
      case T::var_end: return ", found '}}'";
      default: return cur().s.empty() ? "" : ", found '" + cur().s + "'";
    }
  }
  std::string name_token() {
    if (cur().type != T::name) fail(cur().pos, "expected a name" + found());
    return next().s;
  }
  void end_block() {
    if (cur().type != T::block_end) fail(cur().pos, "expected the end of the tag" + found());
    ++i_;
  }

  // Statements until one of `ends` (a block tag whose first name is in it); that tag is left unread
  // (positioned at its name).
  std::vector<TemplateNode> parse_body(const std::set<std::string>& ends) {
    std::vector<TemplateNode> body;
    while (cur().type != T::eof) {
      const Token& tok = cur();
      if (tok.type == T::text) {
        TemplateNode n;
        n.k = TemplateNode::K::text;
        n.pos = tok.pos;
        n.text = tok.s;
        body.push_back(std::move(n));
        ++i_;
      } else if (tok.type == T::var_begin) {
        ++i_;
        TemplateNode n;
        n.k = TemplateNode::K::output;
        n.pos = tok.pos;
        n.expr = parse_expr();
        if (cur().type != T::var_end) fail(cur().pos, "expected '}}'" + found());
        ++i_;
        body.push_back(std::move(n));
      } else if (tok.type == T::block_begin) {
        ++i_;
        if (cur().type != T::name) fail(cur().pos, "expected a tag name" + found());
        if (ends.count(cur().s)) return body;
        body.push_back(parse_statement());
      } else {
        fail(tok.pos, "unexpected token");
      }
    }
    if (!ends.empty()) fail(cur().pos, "missing '{% " + *ends.rbegin() + " %}'");
    return body;
  }

  TemplateNode parse_statement() {
    const Token& tok = next();
    TemplateNode n;
    n.pos = tok.pos;
    const std::string& tag = tok.s;
    if (tag == "if") {
      n.k = TemplateNode::K::if_;
      ExprP cond = parse_expr();
      end_block();
      while (true) {
        auto body = parse_body({"elif", "else", "endif"});
        n.branches.emplace_back(cond, std::move(body));
        std::string t = next().s;
        if (t == "endif") break;
        if (!cond) fail(t_[i_ - 1].pos, "'" + t + "' after 'else'");
        cond = t == "elif" ? parse_expr() : nullptr;
        end_block();
      }
      end_block();
    } else if (tag == "for") {
      n.k = TemplateNode::K::for_;
      n.targets.push_back(name_token());
      while (is_op(",")) {
        ++i_;
        n.targets.push_back(name_token());
      }
      expect_name("in");
      n.expr = parse_or_cond(false);
      if (is_name("if")) {
        ++i_;
        n.filter = parse_expr();
      }
      if (is_name("recursive")) fail(cur().pos, "unsupported: recursive loops");
      end_block();
      ++loop_depth_;
      n.body = parse_body({"else", "endfor"});
      if (next().s == "else") {
        end_block();
        n.else_body = parse_body({"endfor"});
        ++i_;
      }
      end_block();
    } else if (tag == "set") {
      n.targets.push_back(name_token());
      if (is_op(".")) {
        ++i_;
        n.targets.push_back(name_token());
        n.attr_target = true;
      }
      if (cur().type == T::block_end && !n.attr_target) {
        n.k = TemplateNode::K::set_block;
        end_block();
        n.body = parse_body({"endset"});
        ++i_;
      } else {
        n.k = TemplateNode::K::set;
        if (is_op(",")) fail(cur().pos, "unsupported: tuple assignment in set");
        expect_op("=");
        n.expr = parse_expr();
      }
      end_block();
    } else if (tag == "macro") {
      n.k = TemplateNode::K::macro;
      n.text = name_token();
      expect_op("(");
      while (!is_op(")")) {
        n.params.push_back(name_token());
        ExprP def;
        if (is_op("=")) {
          ++i_;
          def = parse_expr();
        }
        n.defaults.push_back(def);
        if (!is_op(")")) expect_op(",");
      }
      ++i_;
      end_block();
      n.body = parse_body({"endmacro"});
      ++i_;
      end_block();
    } else if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) fail(tok.pos, "'" + tag + "' outside a loop");
      n.k = tag == "break" ? TemplateNode::K::break_ : TemplateNode::K::continue_;
      end_block();
    } else if (tag == "generation") {  // transformers' assistant-mask marker: renders its body
      end_block();
      n.k = TemplateNode::K::body;
      n.body = parse_body({"endgeneration"});
      ++i_;
      end_block();
    } else {
      fail(tok.pos, "unsupported tag '" + tag + "'");
    }
    if (n.k == TemplateNode::K::for_) --loop_depth_;
    return n;
  }

  ExprP make(Expr::K k, size_t pos, std::vector<ExprP> args = {}, std::string name = "") {
    auto e = std::make_shared<Expr>();
    e->k = k;
    e->pos = pos;
    e->args = std::move(args);
    e->name = std::move(name);
    return e;
  }

  // expr := or_expr ['if' or_expr ['else' expr]]
  ExprP parse_expr() { return parse_or_cond(true); }
  ExprP parse_or_cond(bool with_cond) {
    ExprP e = parse_or();
    while (with_cond && is_name("if")) {
      size_t pos = next().pos;
      ExprP cond = parse_or();
      ExprP other;
      if (is_name("else")) {
        ++i_;
        other = parse_or_cond(true);
      }
      e = make(Expr::K::cond, pos, {e, cond, other});
    }
    return e;
  }
  ExprP parse_or() {
    ExprP e = parse_and();
    while (is_name("or")) {
      size_t pos = next().pos;
      e = make(Expr::K::or_, pos, {e, parse_and()});
    }
    return e;
  }
  ExprP parse_and() {
    ExprP e = parse_not();
    while (is_name("and")) {
      size_t pos = next().pos;
      e = make(Expr::K::and_, pos, {e, parse_not()});
    }
    return e;
  }
  ExprP parse_not() {
    if (is_name("not")) {
      size_t pos = next().pos;
      return make(Expr::K::not_, pos, {parse_not()});
    }
    return parse_compare();
  }
  ExprP parse_compare() {
    size_t pos = cur().pos;
    ExprP first = parse_math1();
    auto e = std::make_shared<Expr>();
    e->k = Expr::K::compare;
    e->pos = pos;
    e->args.push_back(first);
    while (true) {
      static const std::set<std::string> cmp = {"==", "!=", "<", "<=", ">", ">="};
      if (cur().type == T::op && cmp.count(cur().s)) {
        e->ops.push_back(next().s);
      } else if (is_name("in")) {
        ++i_;
        e->ops.push_back("in");
      } else if (is_name("not") && t_[i_ + 1].type == T::name && t_[i_ + 1].s == "in") {
        i_ += 2;
        e->ops.push_back("not in");
      } else {
        break;
      }
      e->args.push_back(parse_math1());
    }
    return e->ops.empty() ? first : e;
  }
  ExprP binary(const std::vector<std::string>& ops, ExprP (Parser::*sub)()) {
    ExprP e = (this->*sub)();
    while (cur().type == T::op && std::find(ops.begin(), ops.end(), cur().s) != ops.end()) {
      const Token& op = next();
      e = make(Expr::K::binary, op.pos, {e, (this->*sub)()}, op.s);
    }
    return e;
  }
  ExprP parse_math1() { return binary({"+", "-"}, &Parser::parse_concat); }
  ExprP parse_concat() { return binary({"~"}, &Parser::parse_math2); }
  ExprP parse_math2() { return binary({"*", "/", "//", "%"}, &Parser::parse_pow); }
  ExprP parse_pow() { return binary({"**"}, &Parser::parse_unary_filtered); }
  ExprP parse_unary_filtered() { return parse_unary(true); }
  ExprP parse_unary(bool with_filter) {
    ExprP e;
    if (is_op("-") || is_op("+")) {
      const Token& op = next();
      e = make(op.s == "-" ? Expr::K::neg : Expr::K::pos, op.pos, {parse_unary(false)});
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filter ? parse_filters(e) : e;
  }

  ExprP parse_primary() {
    const Token& tok = cur();
    size_t pos = tok.pos;
    if (tok.type == T::name) {
      ++i_;
      static const std::map<std::string, ojson> constants = {{"true", true}, {"True", true}, {"false", false},
                                                             {"False", false}, {"none", nullptr}, {"None", nullptr}};
      auto c = constants.find(tok.s);
      if (c != constants.end()) {
        auto e = make(Expr::K::literal, pos);
        std::const_pointer_cast<Expr>(e)->value = c->second;
        return e;
      }
      return make(Expr::K::name, pos, {}, tok.s);
    }
    if (tok.type == T::string || tok.type == T::integer || tok.type == T::floating) {
      ++i_;
      auto e = std::make_shared<Expr>();
      e->k = Expr::K::literal;
      e->pos = pos;
      if (tok.type == T::string) {
        e->value = tok.s;
        while (cur().type == T::string) e->value = e->value.get<std::string>() + next().s;  // 'a' 'b' joins
      } else if (tok.type == T::integer) {
        e->value = tok.i;
      } else {
        e->value = tok.f;
      }
      return e;
    }
    if (is_op("(")) {
      ++i_;
      if (is_op(")")) {
        ++i_;
        return make(Expr::K::tuple, pos);
      }
      ExprP first = parse_expr();
      if (is_op(")")) {
        ++i_;
        return first;
      }
      std::vector<ExprP> items = {first};
      while (is_op(",")) {
        ++i_;
        if (is_op(")")) break;
        items.push_back(parse_expr());
      }
      expect_op(")");
      return make(Expr::K::tuple, pos, items);
    }
    if (is_op("[")) {
      ++i_;
      std::vector<ExprP> items;
      while (!is_op("]")) {
        items.push_back(parse_expr());
        if (!is_op("]")) expect_op(",");
      }
      ++i_;
      return make(Expr::K::list, pos, items);
    }
    if (is_op("{")) {
      ++i_;
      std::vector<ExprP> items;  // key, value, key, value, ...
      while (!is_op("}")) {
        items.push_back(parse_expr());
        expect_op(":");
        items.push_back(parse_expr());
        if (!is_op("}")) expect_op(",");
      }
      ++i_;
      return make(Expr::K::dict, pos, items);
    }
    fail(pos, "expected an expression" + found());
  }

  // Call arguments after '(' : positional then keyword ones.
  void parse_call_args(Expr& e) {
    while (!is_op(")")) {
      if (cur().type == T::name && t_[i_ + 1].type == T::op && t_[i_ + 1].s == "=") {
        std::string key = next().s;
        ++i_;
        e.kwargs.emplace_back(key, parse_expr());
      } else {
        if (!e.kwargs.empty()) fail(cur().pos, "a positional argument after keyword arguments");
        e.args.push_back(parse_expr());
      }
      if (!is_op(")")) expect_op(",");
    }
    ++i_;
  }

  ExprP parse_postfix(ExprP e) {
    while (true) {
      if (is_op(".")) {
        size_t pos = next().pos;
        if (cur().type == T::integer) {
          auto idx = make(Expr::K::literal, cur().pos);
          std::const_pointer_cast<Expr>(idx)->value = next().i;
          e = make(Expr::K::item, pos, {e, idx});
        } else {
          e = make(Expr::K::attr, pos, {e}, name_token());
        }
      } else if (is_op("[")) {
        size_t pos = next().pos;
        ExprP parts[3];
        int colons = 0;
        while (!is_op("]")) {
          if (is_op(":")) {
            if (++colons > 2) fail(cur().pos, "too many ':' in a slice");
            ++i_;
          } else {
            if (parts[colons]) expect_op("]");
            parts[colons] = parse_expr();
          }
        }
        ++i_;
        if (colons == 0) {
          if (!parts[0]) fail(pos, "empty subscript");
          e = make(Expr::K::item, pos, {e, parts[0]});
        } else {
          e = make(Expr::K::slice, pos, {e, parts[0], parts[1], parts[2]});
        }
      } else if (is_op("(")) {
        size_t pos = next().pos;
        auto call = std::make_shared<Expr>();
        call->k = Expr::K::call;
        call->pos = pos;
        if (e->k == Expr::K::attr) {
          if (!kMethods.count(e->name)) fail(e->pos, "unsupported method '" + e->name + "'");
          call->name = e->name;
          call->args.push_back(e->args[0]);
        } else if (e->k == Expr::K::name) {
          call->name = e->name;
          call->args.push_back(nullptr);  // a function, not a method: no subject
        } else {
          fail(pos, "unsupported call of a computed value");
        }
        parse_call_args(*call);
        e = call;
      } else {
        return e;
      }
    }
  }

  ExprP parse_filters(ExprP e) {
    while (true) {
      if (is_op("|")) {
        ++i_;
        const Token& tok = cur();
        std::string name = name_token();
        if (!kFilters.count(name))
          fail(tok.pos, "unsupported filter '" + name + "'");
        auto f = std::make_shared<Expr>();
        f->k = Expr::K::filter;
        f->pos = tok.pos;
        f->name = name;
        f->args.push_back(e);
        if (is_op("(")) {
          ++i_;
          parse_call_args(*f);
        }
        e = f;
      } else if (is_name("is")) {
        ++i_;
        auto t = std::make_shared<Expr>();
        t->k = Expr::K::test;
        if (is_name("not")) {
          ++i_;
          t->negated = true;
        }
        const Token& tok = cur();
        t->pos = tok.pos;
        t->name = name_token();
        if (!kTests.count(t->name)) fail(tok.pos, "unsupported test '" + t->name + "'");
        t->args.push_back(e);
        if (is_op("(")) {
          ++i_;
          parse_call_args(*t);
        } else if ((cur().type == T::name || cur().type == T::string || cur().type == T::integer ||
                    cur().type == T::floating || is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if")) {
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = t;
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int loop_depth_ = 0;
  std::function<std::string(size_t)> where_;
};

// ---------------------------------------------------------------- renderer

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

bool all_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
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

std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) {  // Python inserts `to` between every character
    std::string out;
    std::vector<uint32_t> cps = code_points(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (i < cps.size()) out += utf8(cps[i]);
    }
    return out;
  }
  std::string out;
  size_t pos = 0;
  for (int64_t done = 0; count < 0 || done < count; ++done) {
    size_t k = s.find(from, pos);
    if (k == std::string::npos) break;
    out += s.substr(pos, k - pos) + to;
    pos = k + from.size();
  }
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

class Renderer {
 public:
  enum class Flow { normal, break_, continue_ };

  explicit Renderer(ojson globals) {
    scopes_.emplace_back();
    for (const auto& [k, v] : globals.items()) scopes_.back()[k] = Value::of(v);
  }

  Flow render(const std::vector<TemplateNode>& body, std::string& out) {
    for (const TemplateNode& n : body) {
      Flow f = render(n, out);
      if (f != Flow::normal) return f;
    }
    return Flow::normal;
  }

 private:
  using Kw = std::vector<std::pair<std::string, Value>>;

  [[noreturn]] static void fail(size_t pos, const std::string& msg) { throw RenderError(msg, pos); }

  Flow render(const TemplateNode& n, std::string& out) {
    switch (n.k) {
      case TemplateNode::K::body: return render(n.body, out);
      case TemplateNode::K::text: out += n.text; return Flow::normal;
      case TemplateNode::K::output: out += to_text(eval(*n.expr), n.expr->pos); return Flow::normal;
      case TemplateNode::K::if_:
        for (const auto& [cond, body] : n.branches)
          if (!cond || truthy(eval(*cond))) return render(body, out);
        return Flow::normal;
      case TemplateNode::K::for_: render_for(n, out); return Flow::normal;
      case TemplateNode::K::set: assign(n, eval(*n.expr)); return Flow::normal;
      case TemplateNode::K::set_block: {
        std::string captured;
        render(n.body, captured);
        assign(n, Value::of(captured));
        return Flow::normal;
      }
      case TemplateNode::K::macro: {
        Value v;
        v.kind = Value::Kind::macro;
        macros_.push_back(std::make_unique<Macro>(Macro{&n}));
        v.macro = macros_.back().get();
        scopes_.back()[n.text] = v;
        return Flow::normal;
      }
      case TemplateNode::K::break_: return Flow::break_;
      case TemplateNode::K::continue_: return Flow::continue_;
    }
    return Flow::normal;
  }

  void assign(const TemplateNode& n, Value v) {
    if (!n.attr_target) {
      scopes_.back()[n.targets[0]] = std::move(v);
      return;
    }
    Value target = lookup(n.targets[0]);
    if (target.kind != Value::Kind::ns)
      fail(n.pos, "cannot set '" + n.targets[1] + "' on '" + n.targets[0] + "', which is not a namespace()");
    (*target.ns)[n.targets[1]] = need_data(v, n.pos, "a namespace attribute");
  }

  void render_for(const TemplateNode& n, std::string& out) {
    std::vector<Value> items = iterate(eval(*n.expr), n.expr->pos);
    if (n.filter) {
      std::vector<Value> kept;
      for (auto& item : items) {
        scopes_.emplace_back();
        bind_targets(n, item);
        if (truthy(eval(*n.filter))) kept.push_back(item);
        scopes_.pop_back();
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      render(n.else_body, out);
      return;
    }
    int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      ojson loop = {{"index0", i},          {"index", i + 1},          {"revindex0", length - 1 - i},
                    {"revindex", length - i}, {"first", i == 0},       {"last", i == length - 1},
                    {"length", length},     {"depth", 1},              {"depth0", 0}};
      if (i > 0 && items[i - 1].is_data()) loop["previtem"] = items[i - 1].data;
      if (i + 1 < length && items[i + 1].is_data()) loop["nextitem"] = items[i + 1].data;
      scopes_.emplace_back();
      scopes_.back()["loop"] = Value::of(std::move(loop));
      bind_targets(n, items[i]);
      Flow f = render(n.body, out);
      scopes_.pop_back();
      if (f == Flow::break_) break;
    }
  }

  void bind_targets(const TemplateNode& n, const Value& item) {
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = item;
      return;
    }
    if (!item.is_data() || !item.data.is_array() || item.data.size() != n.targets.size())
      fail(n.pos, "cannot unpack a " + type_name(item) + " into " + std::to_string(n.targets.size()) + " names");
    for (size_t k = 0; k < n.targets.size(); ++k) scopes_.back()[n.targets[k]] = Value::of(item.data[k]);
  }

  std::vector<Value> iterate(const Value& v, size_t pos) {
    std::vector<Value> items;
    if (v.is_undefined()) return items;
    if (!v.is_data()) fail(pos, "a " + type_name(v) + " is not iterable");
    if (v.data.is_array()) {
      for (const auto& x : v.data) items.push_back(Value::of(x));
    } else if (v.data.is_object()) {
      for (const auto& [k, x] : v.data.items()) items.push_back(Value::of(k));
    } else if (v.data.is_string()) {
      for (uint32_t c : code_points(v.data.get<std::string>())) items.push_back(Value::of(utf8(c)));
    } else {
      fail(pos, "a " + type_name(v) + " is not iterable");
    }
    return items;
  }

  std::string to_text(const Value& v, size_t pos) {
    if (v.is_undefined()) return "";
    if (!v.is_data()) fail(pos, "cannot print a " + type_name(v));
    return py_str(v.data);
  }

  static const ojson& need_data(const Value& v, size_t pos, const std::string& what) {
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

  Value lookup(const std::string& name) {
    for (auto s = scopes_.rbegin(); s != scopes_.rend(); ++s) {
      auto it = s->find(name);
      if (it != s->end()) return it->second;
    }
    return Value::undefined(name);
  }

  Value eval(const Expr& e) {
    switch (e.k) {
      case Expr::K::literal: return Value::of(e.value);
      case Expr::K::name: return lookup(e.name);
      case Expr::K::list:
      case Expr::K::tuple: {
        ojson out = ojson::array();
        for (const auto& a : e.args) out.push_back(need_data(eval(*a), a->pos, "a list item"));
        return Value::of(out);
      }
      case Expr::K::dict: {
        ojson out = ojson::object();
        for (size_t i = 0; i < e.args.size(); i += 2)
          out[need_string(eval(*e.args[i]), e.args[i]->pos, "a dict key")] =
              need_data(eval(*e.args[i + 1]), e.args[i + 1]->pos, "a dict value");
        return Value::of(out);
      }
      case Expr::K::attr: return get_attr(eval(*e.args[0]), e.name, e.pos);
      case Expr::K::item: return get_item(eval(*e.args[0]), eval(*e.args[1]), e.pos);
      case Expr::K::slice: return slice(e);
      case Expr::K::call: return call(e);
      case Expr::K::filter: return filter(e);
      case Expr::K::test: return Value::of(test(e) != e.negated);
      case Expr::K::neg:
      case Expr::K::pos: {
        const ojson& x = need_data(eval(*e.args[0]), e.pos, "an operand of unary " + std::string(e.k == Expr::K::neg ? "-" : "+"));
        if (!is_number(x)) fail(e.pos, "bad operand type for unary -: " + type_name(Value::of(x)));
        int sign = e.k == Expr::K::neg ? -1 : 1;
        return is_int(x) ? Value::of(sign * as_int(x)) : Value::of(sign * as_double(x));
      }
      case Expr::K::binary: return binary(e);
      case Expr::K::cond:
        if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined("the else branch of a conditional expression");
      case Expr::K::and_: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? eval(*e.args[1]) : a;
      }
      case Expr::K::or_: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? a : eval(*e.args[1]);
      }
      case Expr::K::not_: return Value::of(!truthy(eval(*e.args[0])));
      case Expr::K::compare: {
        Value left = eval(*e.args[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.args[i + 1]);
          if (!compare(left, e.ops[i], right, e.args[i + 1]->pos)) return Value::of(false);
          left = std::move(right);
        }
        return Value::of(true);
      }
    }
    fail(e.pos, "unsupported expression");
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

  // Python slice semantics (PySlice_AdjustIndices) over lists and strings.
  Value slice(const Expr& e) {
    Value obj = eval(*e.args[0]);
    const ojson& j = need_data(obj, e.pos, "a sliced value");
    auto bound = [&](const ExprP& x, bool& given) -> int64_t {
      given = false;
      if (!x) return 0;
      Value v = eval(*x);
      if (v.is_data() && v.data.is_null()) return 0;
      given = true;
      return need_int(v, x->pos, "a slice bound");
    };
    bool has_start, has_stop, has_step;
    int64_t start = bound(e.args[1], has_start), stop = bound(e.args[2], has_stop), step = bound(e.args[3], has_step);
    if (!has_step) step = 1;
    if (step == 0) fail(e.pos, "slice step cannot be zero");
    std::vector<uint32_t> cps;
    int64_t n;
    if (j.is_string()) {
      cps = code_points(j.get<std::string>());
      n = static_cast<int64_t>(cps.size());
    } else if (j.is_array()) {
      n = static_cast<int64_t>(j.size());
    } else {
      fail(e.pos, "cannot slice a " + type_name(obj));
    }
    auto adjust = [&](int64_t v, bool given, int64_t dflt) {
      if (!given) return dflt;
      if (v < 0) {
        v += n;
        if (v < 0) v = step < 0 ? -1 : 0;
      } else if (v >= n) {
        v = step < 0 ? n - 1 : n;
      }
      return v;
    };
    start = adjust(start, has_start, step < 0 ? n - 1 : 0);
    stop = adjust(stop, has_stop, step < 0 ? -1 : n);
    std::vector<int64_t> idx;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) idx.push_back(i);
    if (j.is_string()) {
      std::string out;
      for (int64_t i : idx) out += utf8(cps[static_cast<size_t>(i)]);
      return Value::of(out);
    }
    ojson out = ojson::array();
    for (int64_t i : idx) out.push_back(j[static_cast<size_t>(i)]);
    return Value::of(out);
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    Value av = eval(*e.args[0]), bv = eval(*e.args[1]);
    if (op == "~") return Value::of(to_text(av, e.args[0]->pos) + to_text(bv, e.args[1]->pos));
    const ojson& a = need_data(av, e.args[0]->pos, "an operand of " + op);
    const ojson& b = need_data(bv, e.args[1]->pos, "an operand of " + op);
    std::string types = type_name(av) + " and " + type_name(bv);
    if (is_number(a) && is_number(b)) {
      bool ints = is_int(a) && is_int(b);
      if ((op == "/" || op == "//" || op == "%") && as_double(b) == 0) fail(e.pos, "division by zero");
      if (ints) {
        int64_t x = as_int(a), y = as_int(b);
        if (op == "+") return Value::of(x + y);
        if (op == "-") return Value::of(x - y);
        if (op == "*") return Value::of(x * y);
        if (op == "/") return Value::of(static_cast<double>(x) / static_cast<double>(y));
        if (op == "//") return Value::of(floor_div(x, y));
        if (op == "%") return Value::of(x - floor_div(x, y) * y);
        if (op == "**" && y >= 0) {
          int64_t r = 1;
          for (int64_t k = 0; k < y; ++k) r *= x;
          return Value::of(r);
        }
      }
      double x = as_double(a), y = as_double(b);
      if (op == "+") return Value::of(x + y);
      if (op == "-") return Value::of(x - y);
      if (op == "*") return Value::of(x * y);
      if (op == "/") return Value::of(x / y);
      if (op == "//") return Value::of(std::floor(x / y));
      if (op == "%") {
        double r = std::fmod(x, y);
        return Value::of(r != 0 && ((r < 0) != (y < 0)) ? r + y : r);
      }
      if (op == "**") return Value::of(std::pow(x, y));
    }
    if (op == "+" && a.is_string() && b.is_string()) return Value::of(a.get<std::string>() + b.get<std::string>());
    if (op == "+" && a.is_array() && b.is_array()) {
      ojson out = a;
      for (const auto& x : b) out.push_back(x);
      return Value::of(out);
    }
    if (op == "*" && (a.is_string() || a.is_array()) && is_int(b) && !b.is_boolean()) {
      ojson out = a.is_string() ? ojson("") : ojson::array();
      for (int64_t k = 0; k < as_int(b); ++k) {
        if (a.is_string()) out = out.get<std::string>() + a.get<std::string>();
        else for (const auto& x : a) out.push_back(x);
      }
      return Value::of(out);
    }
    if (op == "%" && a.is_string()) fail(e.pos, "unsupported: %-formatting of strings");
    fail(e.pos, "unsupported operand types for " + op + ": " + types);
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

  // Evaluated arguments: positional, then keyword.
  std::pair<std::vector<Value>, Kw> arguments(const Expr& e, size_t first) {
    std::vector<Value> pos;
    Kw kw;
    for (size_t i = first; i < e.args.size(); ++i) pos.push_back(eval(*e.args[i]));
    for (const auto& [k, x] : e.kwargs) kw.emplace_back(k, eval(*x));
    return {pos, kw};
  }

  // The argument named `name` or at `index`; `fallback` when neither was given.
  static Value arg(const std::vector<Value>& pos, const Kw& kw, size_t index, const std::string& name,
                   const Value& fallback) {
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

  Value call(const Expr& e) {
    if (!e.args[0]) return call_function(e);
    Value self = eval(*e.args[0]);
    auto [pos, kw] = arguments(e, 1);
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
      return Value::of(py_replace(s, str_arg(0, "replace()'s old text"), str_arg(1, "replace()'s new text"), count));
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

  Value call_function(const Expr& e) {
    Value callee = lookup(e.name);
    auto [pos, kw] = arguments(e, 1);
    if (callee.kind == Value::Kind::macro) return call_macro(*callee.macro->node, pos, kw, e.pos);
    if (!callee.is_undefined() || !kGlobals.count(e.name)) fail(e.pos, "'" + e.name + "' is not a function lmforge knows");
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

  Value call_macro(const TemplateNode& m, const std::vector<Value>& pos, const Kw& kw, size_t at) {
    if (pos.size() > m.params.size()) fail(at, "macro '" + m.text + "' takes " + std::to_string(m.params.size()) + " arguments");
    if (macro_depth_ >= 100) fail(at, "macro calls nested too deeply (100)");
    ++macro_depth_;
    std::vector<std::map<std::string, Value>> caller_scopes = {scopes_[0]};  // a macro sees the globals only
    std::swap(caller_scopes, scopes_);
    scopes_.emplace_back();
    for (size_t i = 0; i < m.params.size(); ++i) {
      Value v = Value::undefined(m.params[i]);
      if (i < pos.size()) v = pos[i];
      else if (m.defaults[i]) v = eval(*m.defaults[i]);
      scopes_.back()[m.params[i]] = v;
    }
    for (const auto& [k, v] : kw) {
      if (std::find(m.params.begin(), m.params.end(), k) == m.params.end())
        fail(at, "macro '" + m.text + "' has no argument '" + k + "'");
      scopes_.back()[k] = v;
    }
    std::string out;
    render(m.body, out);
    std::swap(caller_scopes, scopes_);
    --macro_depth_;
    return Value::of(out);
  }

  // Dotted attribute lookup for selectattr/map/join: "a.b" -> x.a.b.
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

  bool test(const Expr& e) {
    Value v = eval(*e.args[0]);
    auto [pos, kw] = arguments(e, 1);
    if (!kw.empty()) fail(e.pos, "the test '" + e.name + "' takes no keyword arguments");
    return run_test(e.name, v, pos, e.pos);
  }

  Value filter(const Expr& e) {
    Value v = eval(*e.args[0]);
    auto [pos, kw] = arguments(e, 1);
    return apply_filter(e, e.name, v, pos, kw);
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
                                  count.is_data() && count.data.is_null() ? -1 : need_int(count, at, "replace's count")));
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
      std::string out;
      to_json(need_data(v, at, "the value of tojson"), has_indent ? static_cast<int>(need_int(indent, at, "indent")) : -1,
              truthy(arg(pos, kw, 99, "sort_keys", Value::of(false))), 0, out);
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
        out += (first ? "" : sep) + to_text(x, at);
        first = false;
      }
      return Value::of(out);
    }
    if (f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
      bool by_attr = f == "selectattr" || f == "rejectattr", keep_if = f == "selectattr" || f == "select";
      if (!kw.empty()) fail(at, f + " takes no keyword arguments");
      size_t t = by_attr ? 1 : 0;
      if (by_attr && pos.empty()) fail(at, f + " needs an attribute name");
      std::string test_name = pos.size() > t ? need_string(pos[t], at, f + "'s test") : "";
      if (!test_name.empty() && !kTests.count(test_name)) fail(at, "unsupported test '" + test_name + "'");
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
      if (!kFilters.count(name) || name == "map") fail(at, "unsupported filter '" + name + "' in map");
      std::vector<Value> rest(pos.begin() + 1, pos.end());
      for (const Value& x : items) out.push_back(need_data(apply_filter(e, name, x, rest, kw), at, "a mapped value"));
      return Value::of(out);
    }
    fail(at, "unsupported filter '" + f + "'");
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

  std::vector<std::map<std::string, Value>> scopes_;
  std::vector<std::unique_ptr<Macro>> macros_;
  int macro_depth_ = 0;
};

}  // namespace

// ---------------------------------------------------------------- public API

namespace {

// "<source>:<line>:<col>" of a byte offset in `text`.
std::string position(const std::string& source, const std::string& text, size_t pos) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      ++col;
    }
  }
  return source + ":" + std::to_string(line) + ":" + std::to_string(col);
}

// Jinja2 reads templates with universal newlines and drops one trailing newline.
std::string normalize_newlines(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r') {
      out += '\n';
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else {
      out += text[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string text, std::string source) : text_(std::move(text)), source_(std::move(source)) {
  std::string normalized = normalize_newlines(text_);
  auto where = [&](size_t pos) { return position(source_, normalized, pos); };
  std::vector<Token> tokens = Lexer(normalized, where).run();
  auto root = std::make_shared<TemplateNode>();
  root->body = Parser(std::move(tokens), where).parse_template();
  root->text = std::move(normalized);
  root_ = root;
}

std::string ChatTemplate::version() const { return sha256_hex(text_).substr(0, 16); }

std::string ChatTemplate::render(const ojson& vars, const std::string& where) const {
  ojson globals = special_tokens;
  for (const auto& [k, v] : vars.items()) globals[k] = v;
  Renderer r(globals);
  std::string out;
  try {
    r.render(root_->body, out);
  } catch (const RenderError& e) {
    throw InputError(where + ": " + position(source_, root_->text, e.pos) + ": " + e.what());
  } catch (const Raised& e) {
    throw InputError(where + ": the chat template (" + source_ + ") raised: " + e.what());
  } catch (const ojson::exception& e) {  // e.g. tojson of text that is not UTF-8
    throw InputError(where + ": the chat template (" + source_ + ") failed: " + e.what());
  }
  return out;
}

std::string render_chat(const ChatTemplate& t, const ojson& messages, bool add_generation_prompt, const std::string& where,
                        const ojson& tools) {
  ojson vars = {{"messages", messages}, {"add_generation_prompt", add_generation_prompt}, {"tools", tools},
                {"documents", nullptr}};
  return t.render(vars, where);
}

namespace {

ojson read_ordered_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path.string() + ": cannot be read");
  try {
    return ojson::parse(in);
  } catch (const ojson::parse_error& e) {
    throw InputError(path.string() + ": not valid JSON: " + e.what());
  }
}

std::string read_text(const fs::path& path) { return read_file(path.string(), path.string() + ": cannot be read"); }

// A special token as tokenizer_config.json spells it: a string or an AddedToken {"content": ...}.
ojson token_text(const ojson& t) {
  if (t.is_object() && t.contains("content")) return t["content"];
  return t;
}

}  // namespace

std::shared_ptr<const ChatTemplate> load_chat_template(const std::string& dir) {
  fs::path config_path = fs::path(dir) / "tokenizer_config.json", jinja_path = fs::path(dir) / "chat_template.jinja";
  ojson config = fs::exists(config_path) ? read_ordered_json(config_path) : ojson::object();
  std::shared_ptr<ChatTemplate> t;
  if (fs::exists(jinja_path)) {
    t = std::make_shared<ChatTemplate>(read_text(jinja_path), jinja_path.string());
  } else if (config.is_object() && config.contains("chat_template") && !config["chat_template"].is_null()) {
    const ojson& c = config["chat_template"];
    std::string source = config_path.string() + ": chat_template";
    if (c.is_string()) {
      t = std::make_shared<ChatTemplate>(c.get<std::string>(), source);
    } else if (c.is_array()) {
      for (const auto& item : c)
        if (item.is_object() && item.value("name", "") == "default" && item.contains("template") &&
            item["template"].is_string())
          t = std::make_shared<ChatTemplate>(item["template"].get<std::string>(), source + "[default]");
      if (!t) throw InputError(source + ": a list of templates without one named \"default\"");
    } else {
      throw InputError(source + ": must be a string or a list of {name, template}");
    }
  }
  if (!t) return nullptr;
  if (config.is_object()) {
    for (const char* name : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
      if (config.contains(name) && !token_text(config[name]).is_null()) t->special_tokens[name] = token_text(config[name]);
    if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
      ojson extra = ojson::array();
      for (const auto& x : config["additional_special_tokens"]) extra.push_back(token_text(x));
      t->special_tokens["additional_special_tokens"] = extra;
    }
  }
  return t;
}

}  // namespace lmforge::data
