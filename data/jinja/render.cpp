// data/jinja/render.cpp -- the renderer: statements, loops, macros, namespace assignment and expression
// evaluation with Python's operators and slices. Not here: filters, tests, methods and globals (filters.cpp).
#include "data/jinja/render.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <utility>

#include "data/jinja/filters.h"

namespace lmforge::data::jinja {

namespace {

// The running account of the rendering on this thread (one at a time: a Renderer is not re-entrant).
struct Budget {
  Limits limits;
  uint64_t spent = 0;
};
thread_local Budget* current = nullptr;

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Python's int arithmetic within int64 (Python would grow a big integer; lmforge refuses).
int64_t int_op(char op, int64_t x, int64_t y, size_t pos) {
  int64_t r = 0;
  bool overflowed = op == '+' ? __builtin_add_overflow(x, y, &r) : op == '-' ? __builtin_sub_overflow(x, y, &r)
                                                                             : __builtin_mul_overflow(x, y, &r);
  if (overflowed) fail(pos, "integer overflow (integers are 64-bit here)");
  return r;
}

int64_t int_pow(int64_t x, int64_t y, size_t pos) {  // by squaring: O(log y) whatever y is
  int64_t r = 1;
  while (y > 0) {
    if (y & 1) r = int_op('*', r, x, pos);
    y >>= 1;
    if (y > 0) x = int_op('*', x, x, pos);
  }
  return r;
}

// A loop iteration builds its `loop` object (nine entries) and a scope: it costs as much as ~32 steps.
constexpr uint64_t kIterationUnits = 32;

// What reading a value once costs (a filter, method, test or slice walks it): its text's bytes, a list's
// or dict's length. Shallow, so that `messages | length` stays cheap to charge.
uint64_t read_cost(const Value& v) {
  if (!v.is_data()) return 0;
  if (v.data.is_string()) return v.data.get_ref<const std::string&>().size() / kBytesPerUnit;
  return v.data.is_structured() ? v.data.size() : 0;
}

class Renderer {
 public:
  enum class Flow { normal, break_, continue_ };

  explicit Renderer(ojson globals) {
    scopes_.emplace_back();
    for (const auto& [k, v] : globals.items()) scopes_.back()[k] = Value::of(v);
    globals_weight_ = weight(globals);
  }

  // The root output: {% generation %} spans are offsets into it.
  void set_root(std::string* root) { root_ = root; }
  std::vector<std::pair<size_t, size_t>>& generation() { return generation_; }

  Flow render(const std::vector<TemplateNode>& body, std::string& out) {
    for (const TemplateNode& n : body) {
      Flow f = render(n, out);
      if (f != Flow::normal) return f;
    }
    return Flow::normal;
  }

 private:
  // Appends `s` to an output (the root or a capture), within the text bound.
  static void write(std::string& out, const std::string& s, size_t pos) {
    check_text(out.size() + s.size(), pos);
    spend(s.size() / kBytesPerUnit, pos);
    out += s;
  }

  Flow render(const TemplateNode& n, std::string& out) {
    spend(1, n.pos);
    switch (n.k) {
      case TemplateNode::K::body: return render(n.body, out);
      case TemplateNode::K::generation: {
        if (&out != root_) fail(n.pos, "unsupported: {% generation %} inside a macro or a set block");
        size_t begin = out.size();
        Flow f = render(n.body, out);
        generation_.emplace_back(begin, out.size());
        return f;
      }
      case TemplateNode::K::text: write(out, n.text, n.pos); return Flow::normal;
      case TemplateNode::K::output: write(out, to_text(eval(*n.expr), n.expr->pos), n.expr->pos); return Flow::normal;
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
    Value hold;
    std::vector<Value> items = iterate(subject(*n.expr, hold), n.expr->pos);
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
      spend(kIterationUnits, n.pos);
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

  const Value* find(const std::string& name) const {
    for (auto s = scopes_.rbegin(); s != scopes_.rend(); ++s) {
      auto it = s->find(name);
      if (it != s->end()) return &it->second;
    }
    return nullptr;
  }

  // A variable's value, copied: the copy is charged by its weight.
  Value lookup(const std::string& name, size_t pos = 0) {
    const Value* v = find(name);
    if (!v) return Value::undefined(name);
    if (v->is_data() && (v->data.is_string() || v->data.is_structured())) spend(weight(v->data) / kBytesPerUnit, pos);
    return *v;
  }

  // The value of `e`, a variable's read in place rather than copied (messages[i], messages | length,
  // for m in messages: linear, not quadratic, in the conversation); `hold` keeps a computed one.
  const Value& subject(const Expr& e, Value& hold) {
    if (e.k == Expr::K::name) {
      spend(1, e.pos);
      if (const Value* v = find(e.name)) return *v;
    }
    hold = eval(e);
    return hold;
  }

  Value eval(const Expr& e) {
    spend(1, e.pos);
    switch (e.k) {
      case Expr::K::literal: return Value::of(e.value);
      case Expr::K::name: return lookup(e.name, e.pos);
      case Expr::K::list:
      case Expr::K::tuple: {
        ojson out = ojson::array();
        for (const auto& a : e.args) {
          out.push_back(need_data(eval(*a), a->pos, "a list item"));
          spend(weight(out.back()) / kBytesPerUnit, a->pos);
        }
        return Value::of(out);
      }
      case Expr::K::dict: {
        ojson out = ojson::object();
        for (size_t i = 0; i < e.args.size(); i += 2)
          out[need_string(eval(*e.args[i]), e.args[i]->pos, "a dict key")] =
              need_data(eval(*e.args[i + 1]), e.args[i + 1]->pos, "a dict value");
        return Value::of(out);
      }
      case Expr::K::attr: {
        Value hold;
        return get_attr(subject(*e.args[0], hold), e.name, e.pos);
      }
      case Expr::K::item: {
        Value hold, key = eval(*e.args[1]);
        return get_item(subject(*e.args[0], hold), key, e.pos);
      }
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
          if (left.is_data() && right.is_data())  // ==, in: as deep as the values
            spend((weight(left.data) + weight(right.data)) / kBytesPerUnit, e.pos);
          if (!compare(left, e.ops[i], right, e.args[i + 1]->pos)) return Value::of(false);
          left = std::move(right);
        }
        return Value::of(true);
      }
    }
    fail(e.pos, "unsupported expression");
  }

  // Python slice semantics (PySlice_AdjustIndices) over lists and strings.
  Value slice(const Expr& e) {
    Value hold;
    const Value& obj = subject(*e.args[0], hold);
    spend(read_cost(obj), e.pos);
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
    spend(idx.size() / 8, e.pos);
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
    if (op == "~") {
      std::string a = to_text(av, e.args[0]->pos), b = to_text(bv, e.args[1]->pos);
      check_text(a.size() + b.size(), e.pos);
      spend((a.size() + b.size()) / kBytesPerUnit, e.pos);
      return Value::of(a + b);
    }
    const ojson& a = need_data(av, e.args[0]->pos, "an operand of " + op);
    const ojson& b = need_data(bv, e.args[1]->pos, "an operand of " + op);
    std::string types = type_name(av) + " and " + type_name(bv);
    if (is_number(a) && is_number(b)) {
      bool ints = is_int(a) && is_int(b);
      if ((op == "/" || op == "//" || op == "%") && as_double(b) == 0) fail(e.pos, "division by zero");
      if (ints) {
        int64_t x = as_int(a), y = as_int(b);
        if (op == "+" || op == "-" || op == "*") return Value::of(int_op(op[0], x, y, e.pos));
        if (op == "/") return Value::of(static_cast<double>(x) / static_cast<double>(y));
        if (op == "//") return Value::of(floor_div(x, y));
        if (op == "%") return Value::of(x - floor_div(x, y) * y);
        if (op == "**" && y >= 0) return Value::of(int_pow(x, y, e.pos));
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
    if (op == "+" && a.is_string() && b.is_string()) {
      const std::string &x = a.get_ref<const std::string&>(), &y = b.get_ref<const std::string&>();
      check_text(x.size() + y.size(), e.pos);
      spend((x.size() + y.size()) / kBytesPerUnit, e.pos);
      return Value::of(x + y);
    }
    if (op == "+" && a.is_array() && b.is_array()) {
      check_items(a.size() + b.size(), e.pos);
      spend((weight(a) + weight(b)) / kBytesPerUnit, e.pos);
      ojson out = a;
      for (const auto& x : b) out.push_back(x);
      return Value::of(out);
    }
    if (op == "*" && (a.is_string() || a.is_array()) && is_int(b) && !b.is_boolean()) {
      // The size is checked before anything is built: 'a' * 10**12 is refused, not attempted.
      uint64_t times = as_int(b) > 0 ? static_cast<uint64_t>(as_int(b)) : 0;
      if (a.is_string()) {
        const std::string& x = a.get_ref<const std::string&>();
        if (!x.empty() && times > (std::numeric_limits<size_t>::max() / x.size())) check_text(SIZE_MAX, e.pos);
        check_text(x.size() * times, e.pos);
        spend(x.size() * times / kBytesPerUnit, e.pos);
        std::string out;
        out.reserve(x.size() * times);
        for (uint64_t k = 0; k < times; ++k) out += x;
        return Value::of(out);
      }
      if (!a.empty() && times > std::numeric_limits<uint64_t>::max() / a.size()) check_items(UINT64_MAX, e.pos);
      check_items(a.size() * times, e.pos);
      uint64_t w = weight(a);
      if (times > 0 && w > std::numeric_limits<uint64_t>::max() / times) spend(UINT64_MAX, e.pos);
      spend(w * times / kBytesPerUnit, e.pos);
      ojson out = ojson::array();
      for (uint64_t k = 0; k < times; ++k)
        for (const auto& x : a) out.push_back(x);
      return Value::of(out);
    }
    if (op == "%" && a.is_string()) fail(e.pos, "unsupported: %-formatting of strings");
    fail(e.pos, "unsupported operand types for " + op + ": " + types);
  }

  // Evaluated arguments: positional, then keyword.
  std::pair<std::vector<Value>, Kw> arguments(const Expr& e, size_t first) {
    std::vector<Value> pos;
    Kw kw;
    for (size_t i = first; i < e.args.size(); ++i) pos.push_back(eval(*e.args[i]));
    for (const auto& [k, x] : e.kwargs) kw.emplace_back(k, eval(*x));
    return {pos, kw};
  }

  Value call(const Expr& e) {
    if (!e.args[0]) return call_function(e);
    Value hold;
    const Value& self = subject(*e.args[0], hold);
    spend(read_cost(self), e.pos);
    auto [pos, kw] = arguments(e, 1);
    for (const Value& a : pos) spend(read_cost(a), e.pos);
    return call_method(e, self, pos, kw);
  }

  Value call_function(const Expr& e) {
    Value callee = lookup(e.name, e.pos);
    auto [pos, kw] = arguments(e, 1);
    if (callee.kind == Value::Kind::macro) return call_macro(*callee.macro->node, pos, kw, e.pos);
    if (!callee.is_undefined() || !known_global(e.name)) fail(e.pos, "'" + e.name + "' is not a function lmforge knows");
    return call_global(e, pos, kw);
  }

  Value call_macro(const TemplateNode& m, const std::vector<Value>& pos, const Kw& kw, size_t at) {
    if (pos.size() > m.params.size()) fail(at, "macro '" + m.text + "' takes " + std::to_string(m.params.size()) + " arguments");
    if (macro_depth_ >= 100) fail(at, "macro calls nested too deeply (100)");
    spend(kIterationUnits + globals_weight_ / kBytesPerUnit + scopes_[0].size(), at);  // the copy of the globals below
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

  bool test(const Expr& e) {
    Value hold;
    const Value& v = subject(*e.args[0], hold);
    spend(read_cost(v), e.pos);
    auto [pos, kw] = arguments(e, 1);
    if (!kw.empty()) fail(e.pos, "the test '" + e.name + "' takes no keyword arguments");
    return run_test(e.name, v, pos, e.pos);
  }

  Value filter(const Expr& e) {
    Value hold;
    const Value& v = subject(*e.args[0], hold);
    spend(read_cost(v), e.pos);
    auto [pos, kw] = arguments(e, 1);
    return apply_filter(e, e.name, v, pos, kw);
  }

  std::vector<std::map<std::string, Value>> scopes_;
  std::vector<std::unique_ptr<Macro>> macros_;
  int macro_depth_ = 0;
  uint64_t globals_weight_ = 0;
  std::string* root_ = nullptr;
  std::vector<std::pair<size_t, size_t>> generation_;
};

// Installs a budget for the rendering on this thread and restores the previous one (none) after.
struct Account {
  Budget budget;
  Budget* previous;
  explicit Account(const Limits& limits) : budget{limits}, previous(current) { current = &budget; }
  ~Account() { current = previous; }
};

}  // namespace

void spend(uint64_t units, size_t pos) {
  if (!current) return;
  Budget& b = *current;
  b.spent = units > b.limits.work - std::min(b.spent, b.limits.work) ? b.limits.work + 1 : b.spent + units;
  if (b.spent > b.limits.work)
    throw BudgetError("the rendering ran out of its work budget (" + std::to_string(b.limits.work) +
                  " units): the chat template loops or builds too much", pos);
}

void check_text(size_t bytes, size_t pos) {
  if (current && bytes > current->limits.text_bytes)
    throw BudgetError("the chat template builds text of more than " + std::to_string(current->limits.text_bytes >> 20) +
                  " MiB (the bound of one rendering)", pos);
}

void check_items(uint64_t items, size_t pos) {
  if (current && items > current->limits.list_items)
    throw BudgetError("the chat template builds a list of more than " + std::to_string(current->limits.list_items) +
                  " items (the bound of one rendering)", pos);
}

uint64_t weight(const ojson& j) {
  if (j.is_string()) return 16 + j.get_ref<const std::string&>().size();
  uint64_t w = 16;
  if (j.is_array())
    for (const auto& x : j) w += weight(x);
  else if (j.is_object())
    for (const auto& [k, x] : j.items()) w += k.size() + weight(x);
  return w;
}

Rendered render(const std::vector<TemplateNode>& body, const ojson& globals, const Limits& limits) {
  Account account(limits);
  Renderer r(globals);
  Rendered out;
  r.set_root(&out.text);
  r.render(body, out.text);
  out.generation = std::move(r.generation());
  return out;
}

}  // namespace lmforge::data::jinja
