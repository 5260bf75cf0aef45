// data/jinja/parser.cpp -- the recursive-descent parser: statements (if, for, set, macro, break, continue,
// generation) and expressions by Jinja2's precedence. Not here: the lexer, evaluation (render.cpp).
#include "data/jinja/parser.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/errors.h"
#include "data/jinja/filters.h"

namespace lmforge::data::jinja {

namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Where& where) : t_(std::move(tokens)), where_(where) {}

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

  // Statements and expressions nest by recursion: a bound keeps a hostile template from overflowing the stack.
  struct Nesting {
    Parser& p;
    Nesting(Parser& parser, size_t pos) : p(parser) {
      if (++p.depth_ > kMaxDepth) p.fail(pos, "nested too deeply (more than " + std::to_string(kMaxDepth) + " levels)");
    }
    ~Nesting() { --p.depth_; }
  };
  static constexpr int kMaxDepth = 200;  // real templates nest a dozen levels; 200 keeps well within the stack

  TemplateNode parse_statement() {
    Nesting guard(*this, cur().pos);
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
    } else if (tag == "generation") {  // transformers' assistant-mask marker: renders its body, spans recorded
      end_block();
      n.k = TemplateNode::K::generation;
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
  // `sub (word sub)*`, left-associative: 'or' over and-expressions, 'and' over not-expressions.
  ExprP logical(const std::string& word, Expr::K k, ExprP (Parser::*sub)()) {
    ExprP e = (this->*sub)();
    while (is_name(word)) {
      size_t pos = next().pos;
      e = make(k, pos, {e, (this->*sub)()});
    }
    return e;
  }
  ExprP parse_or() { return logical("or", Expr::K::or_, &Parser::parse_and); }
  ExprP parse_and() { return logical("and", Expr::K::and_, &Parser::parse_not); }
  ExprP parse_not() {
    Nesting guard(*this, cur().pos);
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
    Nesting guard(*this, cur().pos);
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
          if (!known_method(e->name)) fail(e->pos, "unsupported method '" + e->name + "'");
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
        if (!known_filter(name))
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
        if (!known_test(t->name)) fail(tok.pos, "unsupported test '" + t->name + "'");
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
  int depth_ = 0;
  Where where_;
};

}  // namespace

std::vector<TemplateNode> parse(std::vector<Token> tokens, const Where& where) {
  return Parser(std::move(tokens), where).parse_template();
}

}  // namespace lmforge::data::jinja
