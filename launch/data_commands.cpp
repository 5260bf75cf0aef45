// launch/data_commands.cpp -- `lmforge tokenize`: picks the tokenizer (a config's or a path's),
// reads the text, prints ids or JSON. No tokenizer code lives here.
#include "launch/data_commands.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "trainer/config.h"
#include "trainer/errors.h"

namespace lmforge::launch {

struct DataCommands {
  CLI::App* tokenize = nullptr;
  std::string config_path, tokenizer_path, text;
  std::vector<std::string> files;
  bool json = false, lines = false;
};

namespace {

// The tokenizer training would use: model.from's own (its ids are the weights'), else tokenizer.*.
std::unique_ptr<data::Tokenizer> config_tokenizer(const std::string& path) {
  Config cfg = load_config(path);
  std::unique_ptr<data::Tokenizer> tok = cfg.model.from.empty() ? nullptr : data::load_hf_tokenizer(cfg.model.from);
  return tok ? std::move(tok) : data::make_tokenizer(cfg.tokenizer);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("--file " + path + ": cannot be read");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
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
  return c;
}

int run_data_command(const DataCommands& c) {
  if (*c.tokenize) return run_tokenize(c);
  return -1;
}

}  // namespace lmforge::launch
