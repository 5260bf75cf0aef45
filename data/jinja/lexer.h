// data/jinja/lexer.h -- a template's source text into tokens (text runs, tag delimiters, what tags hold) with
// trim_blocks, lstrip_blocks and -/+ applied, and source positions. Not here: the grammar (parser.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lmforge::data::jinja {

enum class T { text, var_begin, var_end, block_begin, block_end, name, integer, floating, string, op, eof };

struct Token {
  T type;
  std::string s;  // text, name, string value or operator
  int64_t i = 0;
  double f = 0;
  size_t pos = 0;
};

// "<source>:<line>:<col>" of a byte offset, as syntax errors start.
using Where = std::function<std::string(size_t)>;

// Jinja2 reads templates with universal newlines and drops one trailing newline.
std::string normalize_newlines(const std::string& text);
// "<source>:<line>:<col>" of a byte offset in `text`.
std::string position(const std::string& source, const std::string& text, size_t pos);

// The tokens of `src` (normalized), ending with eof; an error throws InputError "<where(pos)>: <what>".
std::vector<Token> lex(const std::string& src, const Where& where);

}  // namespace lmforge::data::jinja
