// data/chat_template.cpp -- ChatTemplate over data/jinja/: parsing with source positions, rendering messages,
// and finding a model directory's template and special tokens. Not here: the Jinja2 interpreter (data/jinja/).
#include "data/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/digest.h"
#include "core/errors.h"
#include "core/files.h"
#include "data/jinja/lexer.h"
#include "data/jinja/parser.h"
#include "data/jinja/render.h"

namespace lmforge::data {

using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

bool holds_generation(const std::vector<TemplateNode>& body) {
  for (const TemplateNode& n : body) {
    if (n.k == TemplateNode::K::generation || holds_generation(n.body) || holds_generation(n.else_body)) return true;
    for (const auto& branch : n.branches)
      if (holds_generation(branch.second)) return true;
  }
  return false;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string text, std::string source) : text_(std::move(text)), source_(std::move(source)) {
  std::string normalized = jinja::normalize_newlines(text_);
  auto where = [&](size_t pos) { return jinja::position(source_, normalized, pos); };
  std::vector<jinja::Token> tokens = jinja::lex(normalized, where);
  auto root = std::make_shared<TemplateNode>();
  root->body = jinja::parse(std::move(tokens), where);
  root->text = std::move(normalized);
  root_ = root;
  has_generation_ = holds_generation(root->body);
}

std::string ChatTemplate::version() const {
  return sha256_hex(has_generation_ ? "lmforge masks: generation blocks\n" + text_ : text_).substr(0, 16);
}

std::string ChatTemplate::render(const ojson& vars, const std::string& where) const {
  return render_spans(vars, where).text;
}

ChatRendering ChatTemplate::render_spans(const ojson& vars, const std::string& where) const {
  ojson globals = special_tokens;
  for (const auto& [k, v] : vars.items()) globals[k] = v;
  ChatRendering out;
  try {
    jinja::Rendered r = jinja::render(root_->body, globals);
    out.text = std::move(r.text);
    out.generation = std::move(r.generation);
  } catch (const jinja::BudgetError& e) {
    throw TemplateBudgetError(where + ": " + jinja::position(source_, root_->text, e.pos) + ": " + e.what());
  } catch (const jinja::RenderError& e) {
    throw InputError(where + ": " + jinja::position(source_, root_->text, e.pos) + ": " + e.what());
  } catch (const jinja::Raised& e) {
    throw InputError(where + ": the chat template (" + source_ + ") raised: " + e.what());
  } catch (const ojson::exception& e) {  // e.g. tojson of text that is not UTF-8
    throw InputError(where + ": the chat template (" + source_ + ") failed: " + e.what());
  }
  return out;
}

std::string render_chat(const ChatTemplate& t, const ojson& messages, bool add_generation_prompt, const std::string& where,
                        const ojson& tools) {
  return render_chat_spans(t, messages, add_generation_prompt, where, tools).text;
}

ChatRendering render_chat_spans(const ChatTemplate& t, const ojson& messages, bool add_generation_prompt,
                                const std::string& where, const ojson& tools) {
  ojson vars = {{"messages", messages}, {"add_generation_prompt", add_generation_prompt}, {"tools", tools},
                {"documents", nullptr}};
  return t.render_spans(vars, where);
}

namespace {

ojson read_ordered_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path.string() + ": cannot be read");
  try {
    return ojson::parse(in);
  } catch (const ojson::parse_error& e) {
    throw InputError(path.string() + ": not valid JSON: " + e.what());
  }
}

std::string read_text(const fs::path& path) { return read_file(path.string(), path.string() + ": cannot be read"); }

// A special token as tokenizer_config.json spells it: a string or an AddedToken {"content": ...}.
ojson token_text(const ojson& t) {
  if (t.is_object() && t.contains("content")) return t["content"];
  return t;
}

}  // namespace

std::shared_ptr<const ChatTemplate> load_chat_template(const std::string& dir) {
  fs::path config_path = fs::path(dir) / "tokenizer_config.json", jinja_path = fs::path(dir) / "chat_template.jinja";
  ojson config = fs::exists(config_path) ? read_ordered_json(config_path) : ojson::object();
  std::shared_ptr<ChatTemplate> t;
  if (fs::exists(jinja_path)) {
    t = std::make_shared<ChatTemplate>(read_text(jinja_path), jinja_path.string());
  } else if (config.is_object() && config.contains("chat_template") && !config["chat_template"].is_null()) {
    const ojson& c = config["chat_template"];
    std::string source = config_path.string() + ": chat_template";
    if (c.is_string()) {
      t = std::make_shared<ChatTemplate>(c.get<std::string>(), source);
    } else if (c.is_array()) {
      for (const auto& item : c)
        if (item.is_object() && item.value("name", "") == "default" && item.contains("template") &&
            item["template"].is_string())
          t = std::make_shared<ChatTemplate>(item["template"].get<std::string>(), source + "[default]");
      if (!t) throw InputError(source + ": a list of templates without one named \"default\"");
    } else {
      throw InputError(source + ": must be a string or a list of {name, template}");
    }
  }
  if (!t) return nullptr;
  if (config.is_object()) {
    for (const char* name : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
      if (config.contains(name) && !token_text(config[name]).is_null()) t->special_tokens[name] = token_text(config[name]);
    if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
      ojson extra = ojson::array();
      for (const auto& x : config["additional_special_tokens"]) extra.push_back(token_text(x));
      t->special_tokens["additional_special_tokens"] = extra;
    }
    for (const auto& [k, v] : t->special_tokens.items()) {
      if (v.is_string()) t->special_texts.push_back(v.get<std::string>());
      if (v.is_array())
        for (const auto& x : v)
          if (x.is_string()) t->special_texts.push_back(x.get<std::string>());
    }
    if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object())
      for (const auto& [id, tok] : config["added_tokens_decoder"].items())
        if (tok.is_object() && tok.value("special", false) && tok.contains("content") && tok["content"].is_string())
          t->special_texts.push_back(tok["content"].get<std::string>());
  }
  std::sort(t->special_texts.begin(), t->special_texts.end());
  t->special_texts.erase(std::unique(t->special_texts.begin(), t->special_texts.end()), t->special_texts.end());
  t->special_texts.erase(std::remove(t->special_texts.begin(), t->special_texts.end(), ""), t->special_texts.end());
  return t;
}

}  // namespace lmforge::data
