// data/jinja/render.h -- the interpreter of the Jinja2 subset chat templates use, written by hand because no
// Debian package provides Jinja for C++: renders a parsed tree over variables. Not here: parsing (parser.h).
//
// Supported: {{ }}, {% %}, {# #}, whitespace control (-, +) with trim_blocks and lstrip_blocks;
// if/elif/else, for (else, loop filter, tuple unpacking, loop.*), break/continue, set (names,
// ns.attr, blocks), macro, generation; literals, lists, dicts, tuples, attribute/item access,
// slices, calls, filters, tests, not/and/or, comparisons, in, ~, + - * / // % **, a if c else b.
// Everything else (include, extends, call blocks, unknown filters/tests/methods) is an error naming it.
// Known difference: tuples are lists here, so printing one whole shows ['a', 1] where Python shows ('a', 1).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/jinja/parser.h"
#include "data/jinja/value.h"

namespace lmforge::data::jinja {

// What one rendering may cost. Templates come with downloaded model directories and are untrusted: a
// hostile one ('a' * 10**12, nested range(100000) loops, a doubling string) stops with a RenderError
// at the construct that crossed a bound, within a fraction of a second, instead of hanging or exhausting
// memory. The defaults are far above what real chat templates need (Qwen3's spends ~400 units a
// message of a few hundred bytes) yet end a runaway loop in well under a second.
struct Limits {
  uint64_t work = 5'000'000;        // units: one per statement or expression, 32 per loop iteration or
                                    // macro call, 1 per 64 bytes of text built or 256 bytes copied
  size_t text_bytes = 8u << 20;     // the output, and any one string a template builds
  uint64_t list_items = 1u << 20;   // any one list a template builds
};

struct Rendered {
  std::string text;
  // Byte ranges [begin, end) of `text` written inside {% generation %} blocks, in output order.
  std::vector<std::pair<size_t, size_t>> generation;
};

// `body` rendered with `globals` as its variables (a JSON object). A runtime error or a crossed bound
// throws RenderError at a byte offset of the template; raise_exception(msg) throws Raised.
Rendered render(const std::vector<TemplateNode>& body, const ojson& globals, const Limits& limits = {});

}  // namespace lmforge::data::jinja
