// launch/data_commands.cpp -- `lmforge tokenize` and `lmforge chat-template`: pick the tokenizer (a
// config's, a path's or a model directory's), print ids, JSON or rendered chats. No tokenizer code here.
#include "launch/data_commands.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/files.h"
#include "data/chat_template.h"
#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "experiments/config.h"
#include "core/errors.h"

namespace lmforge::launch {

struct DataCommands {
  CLI::App* tokenize = nullptr;
  std::string config_path, tokenizer_path, text;
  std::vector<std::string> files;
  bool json = false, lines = false;
  CLI::App* chat = nullptr;  // chat-template
  std::string model_dir, tools_path;
  std::vector<std::string> messages_paths;
  bool add_generation_prompt = false, ids = false;
};

namespace {

// The tokenizer training would use.
std::unique_ptr<data::Tokenizer> config_tokenizer(const std::string& path) { return make_config_tokenizer(load_config(path)); }

std::string read_text_file(const std::string& path) {
  return read_file(path, "--file " + path + ": cannot be read");
}

void print_ids(const data::Tokenizer& tok, const std::string& text, bool json) {
  std::vector<int32_t> ids = tok.encode(text);
  if (json) {
    nlohmann::json pieces = nlohmann::json::array();
    for (int32_t id : ids) pieces.push_back(tok.piece(id));
    nlohmann::json out = {{"ids", ids}, {"pieces", pieces}, {"tokenizer", tok.fingerprint()}};
    // A piece can be part of a UTF-8 character (GPT-2 bytes, byte fallback): U+FFFD stands in for it.
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::string line;
    for (int32_t id : ids) line += (line.empty() ? "" : " ") + std::to_string(id);
    std::printf("%s\n", line.c_str());
  }
}

int run_tokenize(const DataCommands& c) {
  std::vector<std::string> texts;  // read first: a missing file fails before the vocabulary loads
  if (c.files.empty()) texts.push_back(c.text);
  for (const auto& f : c.files) texts.push_back(read_text_file(f));
  auto tok = c.config_path.empty() ? data::load_tokenizer_path(c.tokenizer_path) : config_tokenizer(c.config_path);
  for (const auto& text : texts) {
    if (!c.lines) {
      print_ids(*tok, text, c.json);
      continue;
    }
    std::stringstream in(text);
    for (std::string line; std::getline(in, line);) print_ids(*tok, line, c.json);
  }
  return 0;
}

// A JSON file read keeping its keys' order (tojson prints them as written).
nlohmann::ordered_json read_ordered_json(const std::string& option, const std::string& path) {
  try {
    return nlohmann::ordered_json::parse(read_text_file(path));
  } catch (const nlohmann::ordered_json::parse_error& e) {
    throw InputError(option + " " + path + ": not valid JSON: " + e.what());
  }
}

// One chat's rendering: its messages and tools from `path` ({messages, tools} or a bare list).
std::string render_file(const data::ChatTemplate& t, const DataCommands& c, const std::string& path) {
  nlohmann::ordered_json messages = read_ordered_json("--messages", path), tools = nullptr;
  if (messages.is_object() && messages.contains("messages")) {
    if (messages.contains("tools")) tools = messages["tools"];
    messages = nlohmann::ordered_json(messages["messages"]);
  }
  if (!messages.is_array()) throw InputError("--messages " + path + ": not a list of {role, content}");
  if (!c.tools_path.empty()) tools = read_ordered_json("--tools", c.tools_path);
  return data::render_chat(t, messages, c.add_generation_prompt, path, tools);
}

int run_chat_template(const DataCommands& c) {
  auto tok = data::load_hf_tokenizer(c.model_dir);
  std::shared_ptr<const data::ChatTemplate> own;
  const data::ChatTemplate* t = tok ? tok->chat_template() : (own = data::load_chat_template(c.model_dir)).get();
  if (!t) throw InputError("--model " + c.model_dir + ": no chat template (tokenizer_config.json or chat_template.jinja)");
  if (c.ids && !tok) throw InputError("--model " + c.model_dir + ": --ids needs tokenizer.json or tokenizer.model");
  for (const auto& path : c.messages_paths) {
    std::string text = render_file(*t, c, path);
    if (c.ids) {
      std::string line;
      for (int32_t id : tok->encode_rendered(text)) line += (line.empty() ? "" : " ") + std::to_string(id);
      std::printf("%s\n", line.c_str());
    } else {
      std::fwrite(text.data(), 1, text.size(), stdout);
      if (c.messages_paths.size() > 1) std::fputc('\0', stdout);  // a text never holds NUL: it separates them
    }
  }
  return 0;
}

}  // namespace

std::shared_ptr<DataCommands> add_data_commands(CLI::App& app) {
  auto c = std::make_shared<DataCommands>();
  c->tokenize = app.add_subcommand("tokenize", "print the token ids of a text (with --json: and their pieces)");
  CLI::App* t = c->tokenize;
  auto* config = t->add_option("--config", c->config_path, "use this training config's tokenizer");
  auto* tokenizer = t->add_option("--tokenizer", c->tokenizer_path,
                                  "tokenizer.json, vocab.json, encoder.json, tokenizer.model or a directory");
  config->excludes(tokenizer);
  auto* text = t->add_option("--text", c->text, "the text");
  auto* file = t->add_option("--file", c->files, "files holding the text; one output line each");
  text->excludes(file);
  t->add_flag("--json", c->json, "print {ids, pieces, tokenizer}");
  t->add_flag("--lines", c->lines, "encode each line on its own (without its newline); one output line each");
  t->callback([=] {
    if (config->count() + tokenizer->count() == 0) throw CLI::RequiredError("--config or --tokenizer");
    if (text->count() + file->count() == 0) throw CLI::RequiredError("--text or --file");
  });

  c->chat = app.add_subcommand("chat-template", "render a chat with a model directory's chat template");
  c->chat->add_option("--model", c->model_dir, "the model (or tokenizer) directory")->required();
  c->chat->add_option("--messages", c->messages_paths,
                      "JSON files, each a list of {role, content} or {messages, tools}; with several, each "
                      "text (or id line) in turn, texts followed by a NUL byte")
      ->required();
  c->chat->add_option("--tools", c->tools_path, "a JSON list of tool schemas (the template's `tools`)");
  c->chat->add_flag("--add-generation-prompt", c->add_generation_prompt, "end with the assistant turn's opening");
  c->chat->add_flag("--ids", c->ids, "print the token ids instead of the text");
  return c;
}

int run_data_command(const DataCommands& c) {
  if (*c.tokenize) return run_tokenize(c);
  if (*c.chat) return run_chat_template(c);
  return -1;
}

}  // namespace lmforge::launch
