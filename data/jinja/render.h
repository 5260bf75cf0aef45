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

#include <string>
#include <vector>

#include "data/jinja/parser.h"
#include "data/jinja/value.h"

namespace lmforge::data::jinja {

// The text of `body` with `globals` as its variables (a JSON object). A runtime error throws RenderError
// at a byte offset of the template; raise_exception(msg) throws Raised.
std::string render(const std::vector<TemplateNode>& body, const ojson& globals);

}  // namespace lmforge::data::jinja
