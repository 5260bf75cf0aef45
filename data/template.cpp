// data/template.cpp -- {field} substitution and template versions. A deliberately small syntax
// (no conditionals, no loops): what a template needs is in the record, not in template logic.
#include "data/template.h"

#include <nlohmann/json.hpp>

#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"

namespace lmforge::data {

std::string PromptTemplate::version() const {
  std::string all = prompt + '\0' + response;
  for (const auto& [role, text] : roles) all += '\0' + role + '\0' + text;
  return sha256_hex(all).substr(0, 16);
}

void read_template(config::Section& s, PromptTemplate& t) {
  s.field("name", t.name, {}, config::Need::required);
  s.field("prompt", t.prompt);
  s.field("response", t.response);
  for (const char* role : {"system", "user", "assistant"}) {
    std::string text;
    s.field(role, text);
    if (!text.empty()) t.roles[role] = text;
  }
  if (t.prompt.empty() && t.response.empty() && t.roles.empty())
    s.error("name", "template '" + t.name + "' defines no text: give prompt/response or system/user/assistant");
}

PromptTemplate builtin_template(const std::string& name) {
  PromptTemplate t;
  if (name == "alpaca") {
    t.name = name;
    t.prompt = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
    t.response = "{output}";
  } else if (name == "chatml") {
    t.name = name;
    t.roles = {{"system", "<|im_start|>system\n{content}<|im_end|>\n"},
               {"user", "<|im_start|>user\n{content}<|im_end|>\n"},
               {"assistant", "<|im_start|>assistant\n{content}<|im_end|>\n"}};
  }
  return t;
}

std::string render_template(const std::string& text, const nlohmann::json& record, const std::string& where,
                            const std::string& template_name) {
  std::string out;
  out.reserve(text.size() * 2);
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
      out += c;
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    size_t close = text.find('}', i);
    if (close == std::string::npos) {
      out += text.substr(i);
      break;
    }
    std::string field = text.substr(i + 1, close - i - 1);
    auto it = record.is_object() ? record.find(field) : record.end();
    bool usable = record.is_object() && it != record.end() && (it->is_string() || it->is_number() || it->is_boolean());
    if (!usable)
      throw InputError(where + ": template '" + template_name + "' needs field '" + field +
                       "', which the record lacks");
    out += it->is_string() ? it->get<std::string>() : it->dump();
    i = close;
  }
  return out;
}

}  // namespace lmforge::data
