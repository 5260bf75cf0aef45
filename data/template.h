// data/template.h -- prompt templates: named texts with {field} placeholders filled from a record,
// versioned by a content hash. Reading sources and computing loss masks live in data/pipeline.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <map>
#include <string>

namespace lmforge::config {
class Section;
}

namespace lmforge::data {

// Instruction records render as prompt + response; chat records as one `roles[role]` text per
// message with {content} (and {role}) filled. Only response / assistant text is trained on
// unless data.train_on_prompt is set.
struct PromptTemplate {
  std::string name;
  std::string prompt;    // e.g. "### Instruction:\n{instruction}\n\n### Response:\n"
  std::string response;  // e.g. "{output}"
  std::map<std::string, std::string> roles;  // chat: role -> text, e.g. user -> "<|user|>\n{content}\n"
  // First 16 hex digits of the SHA-256 of every text above: recorded wherever a template is used.
  std::string version() const;
};
void read_template(config::Section& s, PromptTemplate& t);

// The built-in templates (alpaca, chatml) usable by name without defining them.
PromptTemplate builtin_template(const std::string& name);  // empty name when there is none

// Fills each {field} of `text` with the record's string or number field of that name; "{{" and
// "}}" are literal braces. A missing field, or an object/array/null value, throws InputError
// "<where>: template '<template_name>' needs field '<field>', which the record lacks".
std::string render_template(const std::string& text, const nlohmann::json& record, const std::string& where,
                            const std::string& template_name = "");

}  // namespace lmforge::data
