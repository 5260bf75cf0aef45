// data/pipeline.cpp -- prepare_dataset: reads sources, applies templates and loss masks, filters,
// de-duplicates, splits, packs rows and writes shards and the manifest. Shard I/O is in shards.cpp.
#include "data/pipeline.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "data/chat_masks.h"
#include "data/chat_template.h"
#include "data/shards.h"
#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"
#include "core/log.h"

namespace fs = std::filesystem;

namespace lmforge::data {

static constexpr int kDatasetFormatVersion = 1;
static const char* kModelTemplate = "model";  // template name: the tokenizer's own chat template

static void read_source(config::Section& s, SourceConfig& c) {
  s.field("paths", c.paths, config::Need::required);
  s.field("format", c.format, {"text", "jsonl", "alpaca", "chat"});
  s.field("separator", c.separator);
  s.field("field", c.field);
  s.field("instruction", c.instruction);
  s.field("input", c.input);
  s.field("output", c.output);
  s.field("messages", c.messages);
  s.field("template", c.template_name);
  s.field("weight", c.weight, {0.0, 1000.0});
  s.field("split", c.split, {"auto", "train", "eval"});
  if (c.template_name.empty()) c.template_name = c.format == "alpaca" ? "alpaca" : c.format == "chat" ? "chatml" : "";
  if (!c.template_name.empty() && c.format != "alpaca" && c.format != "chat")
    s.error("template", "templates apply to alpaca and chat sources, not " + c.format);
  if (c.template_name == kModelTemplate && c.format != "chat")
    s.error("template", "'model' (the tokenizer's chat template) applies to chat sources, not " + c.format);
}

void read_data_config(config::Section& s, DataConfig& c) {
  s.field("train", c.train);
  s.field("eval", c.eval);
  for (auto& item : s.items("templates")) {
    c.templates.emplace_back();
    read_template(item, c.templates.back());
    item.finish();
  }
  auto items = s.items("sources");
  for (size_t i = 0; i < items.size(); ++i) {
    auto& item = items[i];
    c.sources.emplace_back();
    c.sources.back().key = "data.sources[" + std::to_string(i) + "].paths";
    read_source(item, c.sources.back());
    const auto& src = c.sources.back();
    bool known = src.template_name.empty() || src.template_name == kModelTemplate ||
                 !builtin_template(src.template_name).name.empty();
    for (const auto& t : c.templates) known = known || t.name == src.template_name;
    if (!known) item.error("template", "no template named '" + src.template_name + "' in data.templates or the built-ins (alpaca, chatml, model)");
    item.finish();
  }
  s.field("train_on_prompt", c.train_on_prompt);
  s.field("eval_fraction", c.eval_fraction, {0.0, 1.0});
  s.field("min_tokens", c.min_tokens, {0, 1LL << 40});
  s.field("max_tokens", c.max_tokens, {0, 1LL << 40});
  s.field("dedup", c.dedup);
  s.field("normalize", c.normalize);
  s.field("cross_document_attention", c.cross_document_attention);
  s.field("on_error", c.on_error, {"error", "skip"});
  s.field("cache_dir", c.cache_dir);
  s.field("shard_rows", c.shard_rows, {1, 1LL << 30});
  if (c.train.empty() && c.sources.empty()) s.error("sources", "give data.sources (or the data.train shorthand)");
  for (const auto& [patterns, split] : {std::pair{c.train, "train"}, std::pair{c.eval, "eval"}}) {
    for (const auto& pattern : patterns) {  // shorthand: one text source per pattern, one document per file
      c.sources.emplace_back();
      c.sources.back().paths = {pattern};
      c.sources.back().split = split;
      c.sources.back().key = "data." + std::string(split);
    }
  }
  c.train.clear();
  c.eval.clear();
}

namespace {

// Offset of the first byte that is not valid UTF-8 (overlongs and surrogates included), or npos.
// Hand-written: a dozen lines, and no Debian library exposes the offset as simply.
size_t invalid_utf8_offset(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > n) return i;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string::npos;
}

std::string normalize_text(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t line_end = 0;  // length of `out` up to the last non-blank character of the current line
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
    if (c == '\n') {
      out.resize(line_end);
      out += '\n';
      line_end = out.size();
      continue;
    }
    out += c;
    if (c != ' ' && c != '\t' && c != '\r') line_end = out.size();
  }
  out.resize(line_end);
  return out;
}

PromptTemplate find_template(const DataConfig& cfg, const std::string& name) {
  for (const auto& t : cfg.templates)
    if (t.name == name) return t;
  return builtin_template(name);
}

struct SourceReader {
  const DataConfig& cfg;
  std::map<std::string, int64_t>& dropped;
  const ChatTemplate* chat = nullptr;  // the tokenizer's, for `template: model`

  // Runs `fn` on one record; a malformed one rethrows or, with on_error: skip, is counted.
  template <class Fn>
  void guarded(Fn&& fn) {
    try {
      fn();
    } catch (const TemplateBudgetError&) {
      throw;  // the template's fault, not the record's: it would hit every record
    } catch (const InputError&) {
      if (cfg.on_error != "skip") throw;
      ++dropped["malformed"];
    }
  }

  void check_utf8(const std::string& text, const std::string& where) {
    size_t bad = invalid_utf8_offset(text);
    if (bad != std::string::npos)
      throw InputError(where + ": invalid UTF-8 at byte offset " + std::to_string(bad));
  }

  Record from_json(const SourceConfig& src, const nlohmann::json& j, const std::string& where) {
    Record r{where, {}};
    auto need = [&](const std::string& field) -> const nlohmann::json& {
      if (!j.is_object() || !j.contains(field))
        throw InputError(where + ": record has no field '" + field + "' (data source format " + src.format + ")");
      return j.at(field);
    };
    auto text_of = [&](const std::string& field) {
      const auto& v = need(field);
      if (!v.is_string()) throw InputError(where + ": field '" + field + "' is not a string");
      return v.get<std::string>();
    };
    if (src.format == "jsonl") {
      r.segments.push_back({text_of(src.field), true});
    } else if (src.format == "alpaca") {
      nlohmann::json fields = {{"instruction", text_of(src.instruction)},
                               {"input", j.is_object() && j.contains(src.input) ? text_of(src.input) : ""},
                               {"output", text_of(src.output)}};
      PromptTemplate t = find_template(cfg, src.template_name);
      r.segments.push_back({render_template(t.prompt, fields, where, t.name), cfg.train_on_prompt});
      r.segments.push_back({render_template(t.response, fields, where, t.name), true});
    } else {  // chat
      const auto& messages = need(src.messages);
      if (!messages.is_array() || messages.empty())
        throw InputError(where + ": field '" + src.messages + "' is not a non-empty list of {role, content}");
      PromptTemplate t = find_template(cfg, src.template_name);
      for (const auto& m : messages) {
        if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
            !m["content"].is_string())
          throw InputError(where + ": a message lacks a string 'role' or 'content'");
        std::string role = m["role"];
        auto it = t.roles.find(role);
        if (it == t.roles.end())
          throw InputError(where + ": template '" + t.name + "' has no text for role '" + role + "'");
        r.segments.push_back({render_template(it->second, m, where, t.name), role == "assistant" || cfg.train_on_prompt});
      }
    }
    return r;
  }

  // A chat record rendered by the model's chat template; which text is trained: data/chat_masks.h.
  Record from_chat_template(const SourceConfig& src, nlohmann::ordered_json j, const std::string& where) {
    if (!j.is_object() || !j.contains(src.messages) || !j[src.messages].is_array() || j[src.messages].empty())
      throw InputError(where + ": field '" + src.messages + "' is not a non-empty list of {role, content}");
    nlohmann::ordered_json messages = j[src.messages], tools = j.contains("tools") ? j["tools"] : nullptr;
    for (auto& m : messages) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        throw InputError(where + ": a message lacks a string 'role'");
      if (cfg.normalize && m.contains("content") && m["content"].is_string())
        m["content"] = normalize_text(m["content"].get<std::string>());
    }
    Record r{where, chat_segments(*chat, messages, tools, where), true};
    for (auto& seg : r.segments) seg.trained = seg.trained || cfg.train_on_prompt;
    return r;
  }

  void read(const SourceConfig& src, const std::string& file, const std::string& text, std::vector<Record>& out) {
    if (src.format == "text") {
      if (src.separator.empty()) {
        guarded([&] {
          check_utf8(text, file);
          out.push_back({file + ":1", {{text, true}}});
        });
        return;
      }
      std::istringstream in(text);
      std::string line, doc;
      int64_t line_no = 0, doc_line = 1;
      auto flush = [&] {
        guarded([&] {
          check_utf8(doc, file + ":" + std::to_string(doc_line));
          out.push_back({file + ":" + std::to_string(doc_line), {{doc, true}}});
        });
        doc.clear();
      };
      while (std::getline(in, line)) {
        ++line_no;
        if (line == src.separator || line == src.separator + "\r") {
          flush();
          doc_line = line_no + 1;
        } else {
          doc += line + "\n";
        }
      }
      flush();
      return;
    }
    std::istringstream in(text);
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      std::string where = file + ":" + std::to_string(line_no);
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      guarded([&] {
        check_utf8(line, where);
        try {
          if (src.template_name == kModelTemplate)  // keys keep their order: tojson prints them as written
            out.push_back(from_chat_template(src, nlohmann::ordered_json::parse(line), where));
          else
            out.push_back(from_json(src, nlohmann::json::parse(line), where));
        } catch (const nlohmann::json::parse_error& e) {
          throw InputError(where + ": malformed JSON: " + std::string(e.what()));
        }
      });
    }
  }
};

struct InputFile {
  std::string path, sha256, text;
  size_t source = 0;
};

std::vector<InputFile> read_inputs(const DataConfig& cfg) {
  std::vector<InputFile> files;
  for (size_t i = 0; i < cfg.sources.size(); ++i) {
    std::string key = cfg.sources[i].key.empty() ? "data.sources[" + std::to_string(i) + "].paths" : cfg.sources[i].key;
    for (const auto& path : expand_patterns(cfg.sources[i].paths, key)) {
      InputFile f{path, "", read_text_file(path, key), i};
      f.sha256 = sha256_hex(f.text);
      files.push_back(std::move(f));
    }
  }
  return files;
}

nlohmann::json config_json(const DataConfig& cfg) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : cfg.sources)
    sources.push_back({{"format", s.format}, {"separator", s.separator}, {"field", s.field},
                       {"fields", {s.instruction, s.input, s.output, s.messages}}, {"template", s.template_name},
                       {"weight", s.weight}, {"split", s.split}});
  return {{"sources", sources}, {"train_on_prompt", cfg.train_on_prompt}, {"eval_fraction", cfg.eval_fraction},
          {"min_tokens", cfg.min_tokens}, {"max_tokens", cfg.max_tokens}, {"dedup", cfg.dedup},
          {"normalize", cfg.normalize}, {"shard_rows", cfg.shard_rows}};
}

// A number in [0, 1) from the seed and a hex digest: the split and weight draws, stable across runs.
double seeded_unit(uint64_t seed, const std::string& salt, const std::string& hex) {
  std::string h = sha256_hex(std::to_string(seed) + salt + hex);
  return static_cast<double>(std::stoull(h.substr(0, 13), nullptr, 16)) / static_cast<double>(1ULL << 52);
}

// The tokenizer's chat template when a source renders with it (null when none does); throws when
// one does and the tokenizer has none.
const ChatTemplate* model_template(const DataConfig& cfg, const Tokenizer* tokenizer) {
  for (const auto& s : cfg.sources) {
    if (s.template_name != kModelTemplate) continue;
    const ChatTemplate* t = tokenizer ? tokenizer->chat_template() : nullptr;
    if (!t)
      throw InputError(s.key.substr(0, s.key.rfind('.')) + ".template: 'model' needs the tokenizer's chat template "
                       "(tokenizer_config.json chat_template or chat_template.jinja beside the tokenizer files)");
    return t;
  }
  return nullptr;
}

std::string length_bucket(size_t n) {
  size_t top = 16;
  while (top < n) top *= 2;
  return "<=" + std::to_string(top);
}

}  // namespace

std::vector<Record> read_records(const DataConfig& cfg, int64_t limit, const Tokenizer* tokenizer) {
  std::map<std::string, int64_t> dropped;
  SourceReader reader{cfg, dropped, model_template(cfg, tokenizer)};
  std::vector<Record> records;
  for (const auto& f : read_inputs(cfg)) {
    reader.read(cfg.sources[f.source], f.path, f.text, records);
    if (limit > 0 && static_cast<int64_t>(records.size()) >= limit) break;
  }
  return records;
}

DatasetManifest read_dataset_manifest(const nlohmann::json& manifest) {
  auto split = [&](const char* name) {
    const auto& entry = manifest.at("splits").at(name);
    DatasetSplit s{entry.at("rows").get<int64_t>(), entry.at("tokens").get<int64_t>(), entry};
    s.summary.erase("shards");
    return s;
  };
  return {split("train"), split("eval"), manifest.value("stats", nlohmann::json()),
          manifest.value("templates", nlohmann::json())};
}

PreparedDataset prepare_dataset(const DataConfig& cfg, const Tokenizer& tokenizer, const PrepareOptions& opt) {
  std::vector<InputFile> files = read_inputs(cfg);
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& f : files) inputs.push_back({{"path", f.path}, {"sha256", f.sha256}, {"bytes", f.text.size()}});
  nlohmann::json templates = nlohmann::json::object();
  for (const auto& s : cfg.sources) {
    if (s.template_name.empty()) continue;
    templates[s.template_name] = s.template_name == kModelTemplate ? model_template(cfg, &tokenizer)->version()
                                                                    : find_template(cfg, s.template_name).version();
  }
  nlohmann::json identity = {{"format_version", kDatasetFormatVersion}, {"tokenizer", tokenizer.fingerprint()},
                             {"vocab_size", tokenizer.vocab_size()}, {"seq_len", opt.seq_len}, {"seed", opt.seed},
                             {"templates", templates}, {"config", config_json(cfg)}};
  std::string id_text = identity.dump();
  for (const auto& f : files) id_text += "\n" + f.sha256;
  PreparedDataset out;
  out.id = sha256_hex(id_text).substr(0, 32);
  out.dir = (fs::path(cfg.cache_dir) / out.id).string();
  std::ifstream existing(out.dir + "/manifest.json");
  if (existing) {
    try {
      out.manifest = nlohmann::json::parse(existing);
      out.reused = true;
      return out;
    } catch (const nlohmann::json::exception&) {
      throw InputError(out.dir + "/manifest.json: not valid JSON; delete the directory to prepare it again");
    }
  }

  // Records -> tokenized documents, per split.
  std::map<std::string, int64_t> dropped{{"empty", 0}, {"too_short", 0}, {"too_long", 0}, {"duplicate", 0},
                                         {"malformed", 0}, {"no_trained_tokens", 0}};
  std::map<std::string, int64_t> histogram;
  SourceReader reader{cfg, dropped, model_template(cfg, &tokenizer)};
  std::set<std::string> seen;
  struct Doc {
    std::vector<int32_t> ids;
    std::vector<uint8_t> mask;
  };
  std::map<std::string, std::vector<Doc>> docs{{"train", {}}, {"eval", {}}};
  int64_t records_read = 0;
  for (const auto& f : files) {
    std::vector<Record> records;
    reader.read(cfg.sources[f.source], f.path, f.text, records);
    const SourceConfig& src = cfg.sources[f.source];
    for (auto& r : records) {
      ++records_read;
      std::string content;
      for (auto& seg : r.segments) {
        if (cfg.normalize && !r.rendered) seg.text = normalize_text(seg.text);  // rendered: contents already were
        content += (seg.trained ? "\x01" : "\x02") + seg.text;
      }
      std::string hash = sha256_hex(content);
      if (cfg.dedup && !seen.insert(hash).second) {
        ++dropped["duplicate"];
        continue;
      }
      Doc d;
      bool any_trained = false;
      for (const auto& seg : r.segments) {
        auto ids = r.rendered ? tokenizer.encode_rendered(seg.text) : tokenizer.encode(seg.text);
        d.ids.insert(d.ids.end(), ids.begin(), ids.end());
        d.mask.insert(d.mask.end(), ids.size(), seg.trained ? 1 : 0);
        any_trained = any_trained || (seg.trained && !ids.empty());
      }
      size_t n = d.ids.size();
      if (n == 0) {
        ++dropped["empty"];
        continue;
      }
      if (static_cast<int64_t>(n) < cfg.min_tokens) {
        ++dropped["too_short"];
        continue;
      }
      if (cfg.max_tokens > 0 && static_cast<int64_t>(n) > cfg.max_tokens) {
        ++dropped["too_long"];
        continue;
      }
      if (!any_trained) {
        ++dropped["no_trained_tokens"];
        continue;
      }
      d.ids.push_back(tokenizer.eos_id());
      d.mask.push_back(r.segments.back().trained ? 1 : 0);
      ++histogram[length_bucket(n)];
      std::string split = src.split;
      if (split == "auto") split = seeded_unit(opt.seed, "split", hash) < cfg.eval_fraction ? "eval" : "train";
      int copies = static_cast<int>(std::floor(src.weight));
      if (seeded_unit(opt.seed, "weight", hash) < src.weight - copies) ++copies;
      for (int k = 0; k < copies; ++k) docs[split].push_back(d);
    }
  }

  // Pack each split into rows of seq_len + 1 and write its shards into a temporary directory.
  std::string tmp_dir = out.dir + ".tmp." + std::to_string(getpid());
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  if (ec) throw InputError("data.cache_dir: cannot create '" + tmp_dir + "': " + ec.message());
  nlohmann::json splits = nlohmann::json::object();
  int64_t total_tokens = 0, max_id = -1;
  const int64_t row_len = opt.seq_len + 1;
  for (auto& [split, split_docs] : docs) {
    PackedRows rows(row_len);
    int64_t trained = 0;
    for (const auto& d : split_docs) {
      rows.add_document(d.ids, d.mask);
      for (auto m : d.mask) trained += m;
      for (auto id : d.ids) max_id = std::max<int64_t>(max_id, id);
    }
    rows.finish(tokenizer.eos_id());
    nlohmann::json shards = nlohmann::json::array();
    for (int64_t first = 0, k = 0; first < rows.rows(); first += cfg.shard_rows, ++k) {
      char name[32];
      std::snprintf(name, sizeof name, "%s_%05lld.h5", split.c_str(), static_cast<long long>(k));
      int64_t count = std::min(cfg.shard_rows, rows.rows() - first);
      ShardInfo info = write_shard(tmp_dir + "/" + name, rows, first, count, tokenizer.vocab_size(), out.id, split);
      shards.push_back({{"file", name}, {"sha256", info.sha256}, {"rows", count}, {"bytes", info.bytes},
                        {"documents", info.documents}});
    }
    total_tokens += rows.tokens();
    splits[split] = {{"documents", split_docs.size()}, {"tokens", rows.tokens()}, {"trained_tokens", trained},
                     {"rows", rows.rows()}, {"shards", shards}};
    if (!opt.quiet && !split_docs.empty())
      log::line("data: " + split + ": " + std::to_string(split_docs.size()) + " documents, " +
                std::to_string(rows.tokens()) + " tokens, " + std::to_string(rows.rows()) + " rows of " +
                std::to_string(row_len) + " in " + std::to_string(shards.size()) + " shards", true);
  }
  out.manifest = {{"format_version", kDatasetFormatVersion},
                  {"dataset_id", out.id},
                  {"tokenizer", tokenizer.fingerprint()},
                  {"vocab_size", tokenizer.vocab_size()},
                  {"max_token_id", max_id},
                  {"seq_len", opt.seq_len},
                  {"row_len", row_len},
                  {"token_dtype", token_dtype_name(tokenizer.vocab_size())},
                  {"templates", templates},
                  {"config", config_json(cfg)},
                  {"seed", opt.seed},
                  {"inputs", inputs},
                  {"splits", splits},
                  {"stats", {{"records", records_read}, {"documents", docs["train"].size() + docs["eval"].size()},
                             {"tokens", total_tokens}, {"dropped", dropped}, {"length_histogram", histogram}}}};
  {
    std::ofstream m(tmp_dir + "/manifest.json");
    m << out.manifest.dump(2) << "\n";
    if (!m) throw InputError("data.cache_dir: cannot write " + tmp_dir + "/manifest.json");
  }
  fs::rename(tmp_dir, out.dir, ec);
  if (ec) {  // another process prepared the same dataset first: theirs is identical
    fs::remove_all(tmp_dir, ec);
    out.reused = true;
  }
  return out;
}

}  // namespace lmforge::data
