// data/chat_template.h -- Hugging Face chat templates: a strict Jinja2 subset, parsed once and rendered
// against JSON messages the way transformers renders them. Not here: tokenizing the result, loss masks.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/errors.h"

namespace lmforge::data {

struct TemplateNode;

// A rendering crossed a bound of the interpreter (its work, the size of a string or list it builds):
// the template, not the record, is at fault, so `data.on_error: skip` does not skip it. Exit 2.
struct TemplateBudgetError : InputError {
  using InputError::InputError;
};

// A rendering with the byte ranges [begin, end) its {% generation %} blocks wrote, in output order.
struct ChatRendering {
  std::string text;
  std::vector<std::pair<size_t, size_t>> generation;
};

// No Debian package offers Jinja for C++, so this is a small hand-written interpreter of what chat
// templates use (see data/jinja/). Environment as transformers': trim_blocks, lstrip_blocks,
// loop controls, raise_exception, strftime_now and HF's tojson. A construct outside the subset is an
// InputError naming it; it never renders something Jinja2 would render differently on purpose.
class ChatTemplate {
 public:
  // Parses `text`; a syntax error throws InputError "<source>:<line>:<col>: <what>".
  ChatTemplate(std::string text, std::string source);
  // Renders with `vars` (an object: messages, add_generation_prompt, ...) over special_tokens. Runtime
  // errors and raise_exception(msg) throw InputError "<where>: ...", naming `where` (the record); a
  // crossed bound (jinja::Limits) throws TemplateBudgetError "<where>: <source>:<line>:<col>: ...".
  std::string render(const nlohmann::ordered_json& vars, const std::string& where) const;
  ChatRendering render_spans(const nlohmann::ordered_json& vars, const std::string& where) const;
  bool has_generation() const { return has_generation_; }  // the text holds {% generation %} blocks

  const std::string& text() const { return text_; }
  const std::string& source() const { return source_; }  // e.g. "<dir>/tokenizer_config.json: chat_template"
  // First 16 hex digits of the text's SHA-256 (what identifies prepared datasets). With {% generation %}
  // blocks the digest also covers that marker: those templates' masks come from the blocks since they
  // are honoured, so their datasets must not reuse ones prepared before.
  std::string version() const;

  // bos_token, eos_token, ... and additional_special_tokens as tokenizer_config.json names them.
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();
  // The texts of the tokenizer's special tokens (added_tokens_decoder entries with special: true, the
  // named ones above): an assistant turn's end-of-turn token is the first of them after its content.
  std::vector<std::string> special_texts;

 private:
  std::string text_, source_;
  std::shared_ptr<const TemplateNode> root_;
  bool has_generation_ = false;
};

// transformers' apply_chat_template(messages, tools, add_generation_prompt) without tokenizing:
// tools and documents are none when not given.
std::string render_chat(const ChatTemplate& t, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                        const std::string& where, const nlohmann::ordered_json& tools = nullptr);
// The same with the ranges its {% generation %} blocks wrote.
ChatRendering render_chat_spans(const ChatTemplate& t, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                const std::string& where, const nlohmann::ordered_json& tools = nullptr);

// The chat template of a model directory: chat_template.jinja, else tokenizer_config.json's
// chat_template (a string, or a list of {name, template} using "default"); special tokens from
// tokenizer_config.json. nullptr when the directory has none; a malformed one throws InputError.
std::shared_ptr<const ChatTemplate> load_chat_template(const std::string& dir);

}  // namespace lmforge::data
