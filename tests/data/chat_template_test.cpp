// tests/data/chat_template_test.cpp -- chat templates: parse errors with line:col, raise_exception and
// runtime errors naming the record, unsupported constructs refused, loading from a model directory, and
// `template: model` chat sources (assistant-only loss spans, dataset id) on a real tokenizer.model.
// Renderings against Jinja2 itself are tests/data/chat_template_cli_test.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <chrono>

#include "data/chat_template.h"
#include "data/pipeline.h"
#include "data/tokenizer.h"
#include "core/errors.h"

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using namespace lmforge::data;
using lmforge::InputError;

namespace {

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::string render(const std::string& text, const ojson& vars = ojson::object()) {
  return ChatTemplate(text, "t.jinja").render(vars, "rec.jsonl:3");
}

TEST(ChatTemplate, ParseErrorsNameSourceLineAndColumn) {
  EXPECT_EQ(error_of([] { ChatTemplate("{% for m in messages %}\n  {{ m.content }\n{% endfor %}", "cfg.json: chat_template"); }),
            "cfg.json: chat_template:2:16: unexpected '}'");
  EXPECT_EQ(error_of([] { ChatTemplate("ab\n{% if x %}yes", "t"); }), "t:2:14: missing '{% endif %}'");
  EXPECT_EQ(error_of([] { ChatTemplate("{{ 'open }}", "t"); }), "t:1:4: the string literal is never closed");
  EXPECT_EQ(error_of([] { ChatTemplate("x {# never closed", "t"); }), "t:1:3: the comment is never closed ('#}' missing)");
}

TEST(ChatTemplate, UnsupportedConstructsAreRefusedByName) {
  EXPECT_EQ(error_of([] { ChatTemplate("{% include 'x' %}", "t"); }), "t:1:4: unsupported tag 'include'");
  EXPECT_EQ(error_of([] { ChatTemplate("{{ x | wordcount }}", "t"); }), "t:1:8: unsupported filter 'wordcount'");
  EXPECT_EQ(error_of([] { ChatTemplate("{{ x is prime }}", "t"); }), "t:1:9: unsupported test 'prime'");
  EXPECT_EQ(error_of([] { ChatTemplate("{{ x.append(1) }}", "t"); }), "t:1:5: unsupported method 'append'");
  EXPECT_NE(error_of([] { render("{{ 'é' | upper }}"); }).find("unsupported: upper of non-ASCII text"), std::string::npos);
  EXPECT_NE(error_of([] { render("{{ '%s' % 1 }}"); }).find("unsupported: %-formatting"), std::string::npos);
  EXPECT_NE(error_of([] { render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"); }).find("nested too deeply"),
            std::string::npos);
}

TEST(ChatTemplate, RaiseExceptionCarriesTheMessageAndTheRecord) {
  std::string t = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user, not ' + messages[0].role) }}{% endif %}ok";
  ojson vars = {{"messages", {{{"role", "system"}, {"content", "s"}}}}};
  EXPECT_EQ(error_of([&] { render(t, vars); }), "rec.jsonl:3: the chat template (t.jinja) raised: first must be user, not system");
  vars["messages"][0]["role"] = "user";
  EXPECT_EQ(render(t, vars), "ok");
}

TEST(ChatTemplate, UndefinedBehavesAsJinja2sDefault) {
  EXPECT_EQ(render("[{{ missing }}]{{ missing is defined }}{{ missing | length }}{% for x in missing %}x{% endfor %}"), "[]False0");
  EXPECT_EQ(render("{{ none.attr is defined }}{{ {'a': 1}.b is defined }}"), "FalseFalse");
  EXPECT_EQ(error_of([] { render("{{ missing.attr }}"); }),
            "rec.jsonl:3: t.jinja:1:11: 'missing' is undefined (its 'attr' was asked for)");
  EXPECT_NE(error_of([] { render("{{ missing + 1 }}"); }).find("'missing' is undefined"), std::string::npos);
}

TEST(ChatTemplate, WhitespaceControlMatchesTrimAndLstripBlocks) {
  // lstrip_blocks drops the indentation before {% %}, trim_blocks the newline after it; {{ }} keeps both.
  EXPECT_EQ(render("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif %}"), "ab");
  EXPECT_EQ(render("  {%+ if true %}x{% endif +%}\ny"), "  x\ny");
  EXPECT_EQ(render("x\n"), "x") << "Jinja2 drops one trailing newline (keep_trailing_newline off)";
}

TEST(ChatTemplate, TransformersGlobalsAndTags) {
  ChatTemplate t("{% generation %}{{ tools is none }}{% endgeneration %}"
                 "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"
                 "|{{ strftime_now('%Y') | length }}",
                 "t");
  EXPECT_EQ(render_chat(t, ojson::array(), false, "w"), "True02|4")
      << "generation renders its body; loop controls; tools is none when not given; strftime_now";
}

class ChatDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_chat_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "model");
    fs::copy_file(std::string(LMFORGE_SOURCE_DIR) + "/tests/fixtures/sentencepiece/bpe.model", dir_ / "model" / "tokenizer.model");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream((dir_ / name).string(), std::ios::binary) << text;
    return (dir_ / name).string();
  }
  void write_config(const ojson& config) { write("model/tokenizer_config.json", config.dump()); }
  DataConfig chat_config(const std::string& jsonl) {
    DataConfig cfg;
    cfg.cache_dir = (dir_ / "cache").string();
    SourceConfig s;
    s.paths = {write("chat.jsonl", jsonl)};
    s.format = "chat";
    s.template_name = "model";
    s.key = "data.sources[0].paths";
    cfg.sources = {s};
    return cfg;
  }
  fs::path dir_;
};

// A Zephyr-like template: each turn "<|role|>\n" + content + eos.
const char* kTurns = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}"
                     "{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
const char* kConversation =
    R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},)"
    R"( {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}]})" "\n";

TEST_F(ChatDirTest, LoadsFromTokenizerConfigListFormOrChatTemplateJinja) {
  write_config({{"bos_token", {{"content", "<s>"}, {"lstrip", false}}}, {"eos_token", "</s>"},
                {"chat_template", {{{"name", "tool_use"}, {"template", "tools"}}, {{"name", "default"}, {"template", "{{ bos_token }}D{{ eos_token }}"}}}}});
  auto t = load_chat_template((dir_ / "model").string());
  ASSERT_TRUE(t);
  EXPECT_EQ(render_chat(*t, ojson::array(), false, "w"), "<s>D</s>") << "AddedToken objects give their content";
  write("model/chat_template.jinja", "J{{ eos_token }}\n");
  auto tok = load_tokenizer_path((dir_ / "model").string());
  ASSERT_TRUE(tok->chat_template());
  EXPECT_EQ(render_chat(*tok->chat_template(), ojson::array(), false, "w"), "J</s>") << "chat_template.jinja wins";
  write_config({{"chat_template", {{{"name", "tool_use"}, {"template", "x"}}}}});
  fs::remove(dir_ / "model" / "chat_template.jinja");
  EXPECT_NE(error_of([&] { load_chat_template((dir_ / "model").string()); }).find("without one named \"default\""),
            std::string::npos);
  fs::remove(dir_ / "model" / "tokenizer_config.json");
  EXPECT_EQ(load_chat_template((dir_ / "model").string()), nullptr);
}

TEST_F(ChatDirTest, ABrokenTemplateFailsWhenUsedNotWhenTheTokenizerLoads) {
  write_config({{"chat_template", "{% if x %}"}});
  auto tok = load_tokenizer_path((dir_ / "model").string());
  EXPECT_FALSE(tok->encode("hello").empty());
  EXPECT_EQ(error_of([&] { tok->chat_template(); }),
            (dir_ / "model" / "tokenizer_config.json").string() + ": chat_template:1:11: missing '{% endif %}'");
}

TEST_F(ChatDirTest, ModelTemplateTrainsOnlyAssistantTurns) {
  write_config({{"eos_token", "</s>"}, {"chat_template", kTurns}});
  auto tok = load_tokenizer_path((dir_ / "model").string());
  DataConfig cfg = chat_config(kConversation);
  auto records = read_records(cfg, 0, tok.get());
  ASSERT_EQ(records.size(), 1u);
  const Record& r = records[0];
  EXPECT_TRUE(r.rendered);
  ASSERT_EQ(r.segments.size(), 4u);
  EXPECT_EQ(r.segments[0].text, "<|user|>\nhi</s>\n<|assistant|>\n");
  EXPECT_FALSE(r.segments[0].trained);
  EXPECT_EQ(r.segments[1].text, "hello</s>\n");
  EXPECT_TRUE(r.segments[1].trained);
  EXPECT_EQ(r.segments[2].text, "<|user|>\nbye</s>\n<|assistant|>\n");
  EXPECT_FALSE(r.segments[2].trained);
  EXPECT_EQ(r.segments[3].text, "ciao</s>\n");
  EXPECT_TRUE(r.segments[3].trained);

  auto d = prepare_dataset(cfg, *tok, {32, 7, true});
  EXPECT_EQ(d.manifest["templates"]["model"], tok->chat_template()->version());
  int64_t want_trained = static_cast<int64_t>(tok->encode_rendered("hello</s>\n").size() +
                                              tok->encode_rendered("ciao</s>\n").size()) + 1;  // + the record's eos
  EXPECT_EQ(d.manifest["splits"]["train"]["trained_tokens"], want_trained);

  write_config({{"eos_token", "</s>"}, {"chat_template", "{# v2: renders the same #}" + std::string(kTurns)}});
  auto changed = load_tokenizer_path((dir_ / "model").string());
  EXPECT_NE(prepare_dataset(cfg, *changed, {32, 7, true}).id, d.id) << "the template's hash is part of the dataset id";
}

TEST_F(ChatDirTest, ModelTemplateErrorsNameTheRecordAndTemplate) {
  // Renders earlier assistant turns differently once a later one exists: prefixes do not match.
  write_config({{"chat_template", "{% for m in messages %}{{ m.content if loop.last else m.content | upper }}|{% endfor %}"}});
  auto tok = load_tokenizer_path((dir_ / "model").string());
  DataConfig cfg = chat_config("\n" + std::string(kConversation));
  // Nor can the content be located: the template upper-cases it.
  std::string err = error_of([&] { read_records(cfg, 0, tok.get()); });
  EXPECT_NE(err.find("chat.jsonl:2: messages[1] (assistant): its content (\"hello\"...) is not in the chat template's ("),
            std::string::npos) << err;
  EXPECT_NE(err.find("tokenizer_config.json: chat_template) rendering of its turn"), std::string::npos) << err;

  write_config({{"chat_template", "{{ raise_exception('no system role') }}"}});
  tok = load_tokenizer_path((dir_ / "model").string());
  EXPECT_NE(error_of([&] { read_records(cfg, 0, tok.get()); }).find("chat.jsonl:2: the chat template"),
            std::string::npos);

  fs::remove(dir_ / "model" / "tokenizer_config.json");
  tok = load_tokenizer_path((dir_ / "model").string());
  EXPECT_EQ(error_of([&] { prepare_dataset(cfg, *tok, {32, 7, true}); }),
            "data.sources[0].template: 'model' needs the tokenizer's chat template (tokenizer_config.json "
            "chat_template or chat_template.jinja beside the tokenizer files)");
}

}  // namespace

// Templates are untrusted (they come with downloaded models): each of these used to run for minutes or
// exhaust memory. Each must stop with exit 2's error naming the template and the construct's line:col,
// well within a second (the bound is 2 s so that a loaded test machine does not fail it).
TEST(ChatTemplate, HostileTemplatesStopFastAtTheirPosition) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{{ 'a' * 1000000000000 }}", "t.jinja:1:8: the chat template builds text of more than 8 MiB"},
      {"{{ [1, 2] * 1000000000000 }}", "t.jinja:1:11: the chat template builds a list of more than 1048576 items"},
      {"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
       "t.jinja:1:32: the rendering ran out of its work budget"},
      {"{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
       "t.jinja:1:"},
      {"{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "t.jinja:1:36: the chat template builds text of more than 8 MiB"},
      {"{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
       "the chat template builds text of more than 8 MiB"},
      {"{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
       "the chat template builds text of more than 8 MiB"},
      {"{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
       "a list of more than 1048576 items"},
      {"{% set s = 'x' * 4000000 %}{% for i in range(100000) %}{% set t = s %}{% endfor %}", "work budget"},
      {"{% set ns = namespace(s='aaaa') %}{% for i in range(64) %}{% set ns.s = ns.s.replace('a', 'aa') %}{% endfor %}",
       "the chat template builds text of more than 8 MiB"},
      {"{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}", "work budget"},
  };
  for (const auto& [text, want] : cases) {
    auto start = std::chrono::steady_clock::now();
    std::string err;
    try {
      render(text);
    } catch (const TemplateBudgetError& e) {
      err = e.what();
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(err.rfind("rec.jsonl:3: t.jinja:1:", 0), 0u) << text << ": " << err;
    EXPECT_NE(err.find(want), std::string::npos) << text << ": " << err;
    EXPECT_LT(seconds, 2.0) << text;
  }
  EXPECT_NE(error_of([] { render("{{ 2 ** 1000000000000 }}"); }).find("t.jinja:1:6: integer overflow"), std::string::npos)
      << "by squaring: no 10**12 multiplications";
  EXPECT_EQ(render("{{ 3 ** 4 }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ 'x' * -1 }}"), "81 ababab [0, 0] ");
  std::string deep = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_NE(error_of([&] { ChatTemplate("{{ " + deep + " }}", "t"); }).find("nested too deeply"), std::string::npos)
      << "the parser recurses: a bound, not a stack overflow";
}

TEST(ChatTemplate, GenerationBlocksRecordTheRangesTheyWrite) {
  ChatTemplate t("{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}</s>"
                 "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{{ '\\n' }}{% endfor %}",
                 "t");
  EXPECT_TRUE(t.has_generation());
  ojson messages = ojson::parse(R"([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                    {"role": "user", "content": "x"}, {"role": "assistant", "content": "z"}])");
  ChatRendering r = render_chat_spans(t, messages, false, "w");
  EXPECT_EQ(r.text, "<user>hi\n<assistant>yo</s>\n<user>x\n<assistant>z</s>\n");
  ASSERT_EQ(r.generation.size(), 2u);
  EXPECT_EQ(r.text.substr(r.generation[0].first, r.generation[0].second - r.generation[0].first), "yo</s>");
  EXPECT_EQ(r.text.substr(r.generation[1].first, r.generation[1].second - r.generation[1].first), "z</s>");
  EXPECT_NE(t.version(), ChatTemplate(t.text() + " ", "t").version());
  EXPECT_FALSE(ChatTemplate("{{ 1 }}", "t").has_generation());
  EXPECT_NE(error_of([] { render("{% set x %}{% generation %}a{% endgeneration %}{% endset %}"); }).find("t.jinja:1:15: unsupported"),
            std::string::npos);
}

TEST_F(ChatDirTest, GenerationBlocksDecideTheMasks) {
  write_config({{"eos_token", "</s>"},
                {"chat_template", "{% for m in messages %}<|{{ m.role }}|>\n{% if m.role == 'assistant' %}{% generation %}"
                                  "{{ m.content }}{{ eos_token }}{% endgeneration %}{% else %}{{ m.content }}{{ eos_token }}"
                                  "{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"}});
  auto tok = load_tokenizer_path((dir_ / "model").string());
  auto records = read_records(chat_config(kConversation), 0, tok.get());
  ASSERT_EQ(records.size(), 1u);
  std::vector<std::pair<std::string, bool>> got, want = {{"<|user|>\nhi</s>\n<|assistant|>\n", false}, {"hello</s>", true},
                                                         {"\n<|user|>\nbye</s>\n<|assistant|>\n", false}, {"ciao</s>", true},
                                                         {"\n", false}};
  for (const auto& s : records[0].segments) got.emplace_back(s.text, s.trained);
  EXPECT_EQ(got, want) << "the blocks exactly: not the newline the prefix method would add";
}

// Earlier turns rendered differently once a later user message exists (Qwen3's think blocks): the prefix
// method cannot mark them, located spans do; a one-turn record gets the same masks from either method.
TEST_F(ChatDirTest, TemplatesThatRewriteEarlierTurnsAreLocated) {
  write_config({{"eos_token", "<|end|>"},
                {"added_tokens_decoder", {{"7", {{"content", "<|end|>"}, {"special", true}}},
                                          {"8", {{"content", "<think>"}, {"special", false}}}}},
                {"chat_template", "{% for m in messages %}<|{{ m.role }}|>\n{% if m.role == 'assistant' and loop.last %}"
                                  "<think></think>{% endif %}{{ m.content | trim }}<|end|>\n{% endfor %}"
                                  "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"}});
  auto tok = load_tokenizer_path((dir_ / "model").string());
  const std::string record = R"({"messages": [{"role": "user", "content": "say ok"}, {"role": "assistant", "content": " ok "},)"
                             R"( {"role": "user", "content": "ok"}, {"role": "assistant", "content": "ok"}]})" "\n"
                             R"({"messages": [{"role": "user", "content": "say ok"}, {"role": "assistant", "content": "ok"}]})" "\n";
  auto records = read_records(chat_config(record), 0, tok.get());
  ASSERT_EQ(records.size(), 2u);
  auto trained = [](const Record& r) {
    std::vector<std::string> t;
    for (const auto& s : r.segments)
      if (s.trained) t.push_back(s.text);
    return t;
  };
  EXPECT_EQ(trained(records[0]), (std::vector<std::string>{"ok<|end|>\n", "<think></think>ok<|end|>\n"}))
      << "the content is found after its turn's header, not in the user's 'say ok' or 'ok'";
  std::string whole;
  for (const auto& s : records[0].segments) whole += s.text;
  EXPECT_EQ(whole, "<|user|>\nsay ok<|end|>\n<|assistant|>\nok<|end|>\n<|user|>\nok<|end|>\n<|assistant|>\n<think></think>ok<|end|>\n");
  EXPECT_EQ(trained(records[1]), (std::vector<std::string>{"<think></think>ok<|end|>\n"})) << "the prefix method's answer";
}

TEST_F(ChatDirTest, ABudgetHitStopsPreparationEvenWhenMalformedRecordsAreSkipped) {
  write_config({{"chat_template", "{% for i in range(100000) %}{% for m in messages %}{% for j in range(1000) %}"
                                  "{% endfor %}{% endfor %}{% endfor %}"}});
  auto tok = load_tokenizer_path((dir_ / "model").string());
  DataConfig cfg = chat_config(kConversation);
  cfg.on_error = "skip";
  std::string err;
  try {
    read_records(cfg, 0, tok.get());
  } catch (const TemplateBudgetError& e) {
    err = e.what();
  }
  EXPECT_NE(err.find("chat.jsonl:1: " + (dir_ / "model" / "tokenizer_config.json").string() + ": chat_template:1:"),
            std::string::npos) << err;
  EXPECT_NE(err.find("work budget"), std::string::npos) << err;
}
