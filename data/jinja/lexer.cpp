// data/jinja/lexer.cpp -- the lexer: text and tags, whitespace control, names, numbers, operators and
// Python string literals; newline normalization and positions. Not here: what the tokens mean (parser.cpp).
#include "data/jinja/lexer.h"

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <map>

#include "core/errors.h"
#include "data/utf8.h"

namespace lmforge::data::jinja {

namespace {

class Lexer {
 public:
  Lexer(const std::string& src, const Where& where) : src_(src), where_(where) {}

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
        value += utf8_encode(static_cast<uint32_t>(std::stoul(hex, nullptr, 16)));
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
  Where where_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(const std::string& src, const Where& where) { return Lexer(src, where).run(); }

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

}  // namespace lmforge::data::jinja
