// data/chat_template.h -- Hugging Face chat templates: a strict Jinja2 subset, parsed once and rendered
// against JSON messages the way transformers renders them. Not here: tokenizing the result, loss masks.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace lmforge::data {

struct TemplateNode;

// No Debian package offers Jinja for C++, so this is a small hand-written interpreter of what chat
// templates use (see data/jinja/). Environment as transformers': trim_blocks, lstrip_blocks,
// loop controls, raise_exception, strftime_now and HF's tojson. A construct outside the subset is an
// InputError naming it; it never renders something Jinja2 would render differently on purpose.
class ChatTemplate {
 public:
  // Parses `text`; a syntax error throws InputError "<source>:<line>:<col>: <what>".
  ChatTemplate(std::string text, std::string source);
  // Renders with `vars` (an object: messages, add_generation_prompt, ...) over special_tokens. Runtime
  // errors and raise_exception(msg) throw InputError "<where>: ...", naming `where` (the record).
  std::string render(const nlohmann::ordered_json& vars, const std::string& where) const;

  const std::string& text() const { return text_; }
  const std::string& source() const { return source_; }  // e.g. "<dir>/tokenizer_config.json: chat_template"
  std::string version() const;                           // first 16 hex digits of the text's SHA-256

  // bos_token, eos_token, ... and additional_special_tokens as tokenizer_config.json names them.
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();

 private:
  std::string text_, source_;
  std::shared_ptr<const TemplateNode> root_;
};

// transformers' apply_chat_template(messages, tools, add_generation_prompt) without tokenizing:
// tools and documents are none when not given.
std::string render_chat(const ChatTemplate& t, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                        const std::string& where, const nlohmann::ordered_json& tools = nullptr);

// The chat template of a model directory: chat_template.jinja, else tokenizer_config.json's
// chat_template (a string, or a list of {name, template} using "default"); special tokens from
// tokenizer_config.json. nullptr when the directory has none; a malformed one throws InputError.
std::shared_ptr<const ChatTemplate> load_chat_template(const std::string& dir);

}  // namespace lmforge::data
