// data/jinja/value.h -- the values a template computes with (undefined, JSON data, namespace(), macros) and
// what Python does with them: truth, equality, comparison, item access, str() and HF's tojson. Not here: filters.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace lmforge::data {

struct TemplateNode;

namespace jinja {

using ojson = nlohmann::ordered_json;

// A {% macro %}: its node in the template tree.
struct Macro {
  const TemplateNode* node;
};

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
struct BudgetError : RenderError {  // a bound of the rendering crossed (spend, check_text, check_items)
  using RenderError::RenderError;
};
struct Raised : std::runtime_error {  // raise_exception(msg)
  using std::runtime_error::runtime_error;
};

// Throws RenderError(msg) at byte offset `pos` of the template.
[[noreturn]] void fail(size_t pos, const std::string& msg);

// The bounds of one rendering (render.h's Limits; render.cpp keeps the running account). Each throws
// RenderError at `pos` when exceeded; outside a rendering they check nothing.
void spend(uint64_t units, size_t pos);          // work: steps, and values built, copied or read
constexpr uint64_t kBytesPerUnit = 16;           // a unit of work per 16 bytes of them
void check_text(size_t bytes, size_t pos);       // a string of `bytes` is about to be built
void check_items(uint64_t items, size_t pos);    // a list of `items` is about to be built
// Roughly the bytes a value occupies (its strings plus 16 per node): what copying it costs.
uint64_t weight(const ojson& j);

std::vector<uint32_t> code_points(const std::string& s);
std::string utf8(uint32_t cp);
std::string utf8(const std::vector<uint32_t>& cps);

// Python's str() of a value, as {{ }} prints it.
std::string py_str(const ojson& j);
// HF's tojson: json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys); indent -1 is none.
void to_json(const ojson& j, int indent, bool sort_keys, int depth, std::string& out);

// Numbers as Python sees them: booleans are integers.
bool is_number(const ojson& j);
double as_double(const ojson& j);
bool is_int(const ojson& j);
int64_t as_int(const ojson& j);

bool truthy(const Value& v);
bool equal(const ojson& a, const ojson& b);
bool equal(const Value& a, const Value& b);
std::string type_name(const Value& v);  // as errors name it: "undefined", "list", "dict", ...

// {{ v }}'s text: nothing for undefined, else py_str.
std::string to_text(const Value& v, size_t pos);
// The items a for loop visits: list items, dict keys, a string's characters; none for undefined.
std::vector<Value> iterate(const Value& v, size_t pos);
// The data of `v`, or a RenderError naming `what` (an undefined name, a namespace, a macro, a wrong type).
const ojson& need_data(const Value& v, size_t pos, const std::string& what);
std::string need_string(const Value& v, size_t pos, const std::string& what);
int64_t need_int(const Value& v, size_t pos, const std::string& what);

// obj.name and obj[key], undefined where missing (an error only on an undefined obj).
Value get_attr(const Value& obj, const std::string& name, size_t pos);
Value get_item(const Value& obj, const Value& key, size_t pos);
// Dotted attribute lookup for selectattr/map/join: "a.b" -> x.a.b.
Value attribute_path(Value v, const std::string& path, size_t pos);
// `av op bv` for ==, !=, <, <=, >, >=, in and not in.
bool compare(const Value& av, const std::string& op, const Value& bv, size_t pos);

}  // namespace jinja
}  // namespace lmforge::data
