// data/jinja/parser.h -- the template tree (expressions and statements) and the parser that builds it from
// tokens, refusing what the subset lacks. Not here: tokenizing (lexer.h), what the tree renders (render.h).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/jinja/lexer.h"
#include "data/jinja/value.h"

namespace lmforge::data {

namespace jinja {

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

}  // namespace jinja

// A statement. In lmforge::data, not jinja: chat_template.h holds the root of the tree.
struct TemplateNode {
  enum class K { body, text, output, if_, for_, set, set_block, macro, break_, continue_, generation };
  K k = K::body;
  size_t pos = 0;
  std::string text;                          // text
  jinja::ExprP expr;                         // output, set value, for iterable
  std::vector<std::pair<jinja::ExprP, std::vector<TemplateNode>>> branches;  // if/elif/else (else: null)
  std::vector<std::string> targets;          // for / set: names (set ns.attr: {ns, attr} with attr_target)
  bool attr_target = false;
  jinja::ExprP filter;                       // for ... if filter
  std::vector<TemplateNode> body, else_body;
  std::vector<std::string> params;           // macro
  std::vector<jinja::ExprP> defaults;        // macro: one per param, null when none
};

namespace jinja {

// The statements of a template; a syntax error throws InputError "<where(pos)>: <what>".
std::vector<TemplateNode> parse(std::vector<Token> tokens, const Where& where);

}  // namespace jinja
}  // namespace lmforge::data
