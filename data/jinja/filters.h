// data/jinja/filters.h -- what a template calls by name: filters, tests, string and dict methods, and the
// globals range, namespace, dict, raise_exception and strftime_now. Not here: macros and operators (render.cpp).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "data/jinja/parser.h"
#include "data/jinja/value.h"

namespace lmforge::data::jinja {

using Kw = std::vector<std::pair<std::string, Value>>;  // keyword arguments, in call order

// The names the subset supports; the parser refuses any other filter, test or method.
bool known_filter(const std::string& name);
bool known_test(const std::string& name);
bool known_method(const std::string& name);
bool known_global(const std::string& name);

// `v | f(pos..., kw...)` with its arguments evaluated; `e` (the filter expression) places and names errors.
Value apply_filter(const Expr& e, const std::string& f, const Value& v, const std::vector<Value>& pos, const Kw& kw);
// `v is name(args...)`, before any `not`.
bool run_test(const std::string& name, const Value& v, const std::vector<Value>& args, size_t pos);
// `self.<e.name>(pos..., kw...)`: a dict or string method.
Value call_method(const Expr& e, const Value& self, const std::vector<Value>& pos, const Kw& kw);
// The global function e.name (known_global); raise_exception throws Raised.
Value call_global(const Expr& e, const std::vector<Value>& pos, const Kw& kw);

}  // namespace lmforge::data::jinja
