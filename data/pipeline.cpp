// data/pipeline.cpp -- prepare_dataset: streams sources in chunks, applies templates and loss masks
// and tokenises on worker threads, then in input order filters, de-duplicates, splits, packs rows,
// writes shards as they fill (checkpointed for resuming) and the manifest. Shard I/O is in shards.cpp.
#include "data/pipeline.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "data/chat_template.h"
#include "data/input_stream.h"
#include "data/ordered_pool.h"
#include "data/shards.h"
#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"
#include "core/files.h"
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
  std::string workers = c.workers == 0 ? "auto" : std::to_string(c.workers);
  s.field("workers", workers);
  char* end = nullptr;
  long long n = std::strtoll(workers.c_str(), &end, 10);
  if (workers == "auto")
    c.workers = 0;
  else if (!workers.empty() && *end == '\0' && n >= 1 && n <= 1024)
    c.workers = n;
  else
    s.error("workers", "expected auto or a number of threads from 1 to 1024, got '" + workers + "'");
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

struct InputFile {
  std::string path, sha256;
  uint64_t bytes = 0;  // as stored (compressed for .gz/.zst)
  size_t source = 0;
};

// A directory's regular files at any depth in byte order of their paths, hidden names skipped.
std::vector<std::string> files_under(const std::string& dir, const std::string& key) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->path().filename().string().rfind('.', 0) == 0) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) out.push_back(it->path().string());
  }
  if (ec) throw InputError(key + ": cannot list '" + dir + "': " + ec.message());
  if (out.empty()) throw InputError(key + ": directory '" + dir + "' holds no files");
  std::sort(out.begin(), out.end());
  return out;
}

// Every source's files in order: globs sorted, directories expanded. Hashes are filled in later.
std::vector<InputFile> list_inputs(const DataConfig& cfg) {
  std::vector<InputFile> files;
  for (size_t i = 0; i < cfg.sources.size(); ++i) {
    std::string key = cfg.sources[i].key.empty() ? "data.sources[" + std::to_string(i) + "].paths" : cfg.sources[i].key;
    for (const auto& path : expand_patterns(cfg.sources[i].paths, key)) {
      std::vector<std::string> found = fs::is_directory(path) ? files_under(path, key) : std::vector<std::string>{path};
      for (auto& p : found) {
        if (::access(p.c_str(), R_OK) != 0) throw InputError(key + ": cannot read '" + p + "': " + std::strerror(errno));
        files.push_back({p, "", stored_size(p), i});
      }
    }
  }
  return files;
}

// One record as read, before templates: a JSONL line or a text document, and where reading goes
// on after it (resuming a prepare).
struct RawRecord {
  std::string where, text;
  size_t source = 0;
  size_t next_file = 0;
  StreamPosition next_at;
};

// The records of the input files in order, read in chunks: one file open, one document in memory.
class RecordStream {
 public:
  RecordStream(const DataConfig& cfg, const std::vector<InputFile>& files, size_t file = 0, StreamPosition at = {})
      : cfg_(cfg), files_(files), file_(file), start_(at) {
    for (size_t i = 0; i < file && i < files.size(); ++i) done_bytes_ += files[i].bytes;
  }
  bool next(RawRecord& r) {
    while (file_ < files_.size()) {
      if (!reader_) open();
      if (read(r)) return true;
      done_bytes_ += files_[file_].bytes;
      reader_.reset();
      ++file_;
    }
    return false;
  }
  uint64_t bytes_read() const {
    return done_bytes_ + (reader_ ? std::min<uint64_t>(reader_->stored_bytes_read(), files_[file_].bytes) : 0);
  }

 private:
  void open() {
    const InputFile& f = files_[file_];
    const SourceConfig& src = cfg_.sources[f.source];
    reader_ = std::make_unique<LineReader>(f.path, src.key);
    if (start_.offset > 0 || start_.line > 0) reader_->seek(start_);
    start_ = {};
    doc_line_ = reader_->position().line + 1;
    doc_.clear();
    file_done_ = false;
    separator_cr_ = src.separator + "\r";
  }
  bool read(RawRecord& r) {
    if (file_done_) return false;
    const InputFile& f = files_[file_];
    const SourceConfig& src = cfg_.sources[f.source];
    if (src.format == "text" && src.separator.empty()) {  // one document per file
      r = {f.path + ":1", reader_->rest(), f.source, file_ + 1, {}};
      file_done_ = true;
      return true;
    }
    if (src.format == "text") {
      while (reader_->next(line_)) {
        if (line_ == src.separator || line_ == separator_cr_) {
          r = {f.path + ":" + std::to_string(doc_line_), std::move(doc_), f.source, file_, reader_->position()};
          doc_.clear();
          doc_line_ = reader_->position().line + 1;
          return true;
        }
        doc_ += line_;
        doc_ += '\n';
      }
      r = {f.path + ":" + std::to_string(doc_line_), std::move(doc_), f.source, file_ + 1, {}};
      file_done_ = true;
      return true;
    }
    while (reader_->next(line_)) {
      if (line_.find_first_not_of(" \t\r") == std::string::npos) continue;
      r = {f.path + ":" + std::to_string(reader_->position().line), std::move(line_), f.source, file_,
           reader_->position()};
      return true;
    }
    return false;
  }
  const DataConfig& cfg_;
  const std::vector<InputFile>& files_;
  size_t file_;
  StreamPosition start_;
  std::unique_ptr<LineReader> reader_;
  uint64_t done_bytes_ = 0;
  std::string line_, doc_, separator_cr_;
  int64_t doc_line_ = 1;
  bool file_done_ = false;
};

struct SourceReader {
  const DataConfig& cfg;
  const ChatTemplate* chat = nullptr;  // the tokenizer's, for `template: model`
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

  // A chat record rendered by the model's chat template. Assistant turn i is trained: the text that
  // messages[:i+1] adds to messages[:i] with the generation prompt. Every such rendering must be a
  // prefix of the whole one, or the turns cannot be told apart.
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
    auto render = [&](size_t n, bool generation_prompt) {
      nlohmann::ordered_json head(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(n));
      return render_chat(*chat, head, generation_prompt, where, tools);
    };
    std::string whole = render(messages.size(), false);
    Record r{where, {}, true};
    size_t done = 0;
    auto not_prefix = [&](const std::string& what, const std::string& part) {
      size_t at = 0;
      while (at < part.size() && at < whole.size() && part[at] == whole[at]) ++at;
      return InputError(where + ": the chat template (" + chat->source() + ") renders " + what +
                        " as text that is not a prefix of the whole conversation's, so the assistant turns "
                        "cannot be marked for the loss (they differ at byte " + std::to_string(at) + ": " +
                        nlohmann::json(part.substr(at, 24)).dump() + " vs " + nlohmann::json(whole.substr(at, 24)).dump() + ")");
    };
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i]["role"] != "assistant") continue;
      std::string before = render(i, true), upto = render(i + 1, false);
      std::string turn = "messages[:" + std::to_string(i) + "]";
      if (whole.compare(0, before.size(), before) != 0) throw not_prefix(turn + " with the generation prompt", before);
      if (whole.compare(0, upto.size(), upto) != 0) throw not_prefix("messages[:" + std::to_string(i + 1) + "]", upto);
      if (before.size() < done || upto.size() < before.size()) throw not_prefix(turn, before);
      if (before.size() > done) r.segments.push_back({whole.substr(done, before.size() - done), cfg.train_on_prompt});
      r.segments.push_back({whole.substr(before.size(), upto.size() - before.size()), true});
      done = upto.size();
    }
    if (done < whole.size()) r.segments.push_back({whole.substr(done), cfg.train_on_prompt});
    return r;
  }

  // One raw record (a JSONL line or a text document) after templates; a malformed one throws InputError.
  Record convert(const SourceConfig& src, const RawRecord& raw) {
    check_utf8(raw.text, raw.where);
    if (src.format == "text") return {raw.where, {{raw.text, true}}};
    try {
      if (src.template_name == kModelTemplate)  // keys keep their order: tojson prints them as written
        return from_chat_template(src, nlohmann::ordered_json::parse(raw.text), raw.where);
      return from_json(src, nlohmann::json::parse(raw.text), raw.where);
    } catch (const nlohmann::json::parse_error& e) {
      throw InputError(raw.where + ": malformed JSON: " + std::string(e.what()));
    }
  }
};

// One record after templates, normalisation and tokenisation: what the in-order half needs.
struct Tokenized {
  enum class Fate { kept, malformed, failed, empty, too_short, too_long, no_trained_tokens };
  Fate fate = Fate::kept;
  std::string error;               // malformed (skippable) or failed (the tokenizer: never skipped)
  std::string hash;                // SHA-256 of the normalised segments and their trained flags
  std::vector<int32_t> ids;        // kept: with the closing eos
  std::vector<uint8_t> mask;
  size_t length = 0;               // tokens without eos
  size_t source = 0, next_file = 0;
  StreamPosition next_at;
};

const char* fate_name(Tokenized::Fate f) {
  switch (f) {
    case Tokenized::Fate::empty: return "empty";
    case Tokenized::Fate::too_short: return "too_short";
    case Tokenized::Fate::too_long: return "too_long";
    case Tokenized::Fate::no_trained_tokens: return "no_trained_tokens";
    default: return "malformed";
  }
}

// Runs on any worker thread: depends on the record alone (the tokenizer's encode is const and
// thread-safe, its piece cache locked).
Tokenized tokenize_record(SourceReader& reader, const Tokenizer& tokenizer, const RawRecord& raw) {
  const DataConfig& cfg = reader.cfg;
  Tokenized t;
  t.source = raw.source;
  t.next_file = raw.next_file;
  t.next_at = raw.next_at;
  Record r;
  try {
    r = reader.convert(cfg.sources[raw.source], raw);
  } catch (const InputError& e) {
    t.fate = Tokenized::Fate::malformed;
    t.error = e.what();
    return t;
  }
  std::string content;
  for (auto& seg : r.segments) {
    if (cfg.normalize && !r.rendered) seg.text = normalize_text(seg.text);  // rendered: contents already were
    content += (seg.trained ? "\x01" : "\x02") + seg.text;
  }
  t.hash = sha256_hex(content);
  bool any_trained = false;
  try {
    for (const auto& seg : r.segments) {
      auto ids = r.rendered ? tokenizer.encode_rendered(seg.text) : tokenizer.encode(seg.text);
      t.ids.insert(t.ids.end(), ids.begin(), ids.end());
      t.mask.insert(t.mask.end(), ids.size(), seg.trained ? 1 : 0);
      any_trained = any_trained || (seg.trained && !ids.empty());
    }
  } catch (const InputError& e) {
    t.fate = Tokenized::Fate::failed;
    t.error = r.where + ": " + e.what();
    return t;
  }
  t.length = t.ids.size();
  const auto n = static_cast<int64_t>(t.length);
  t.fate = n == 0                                        ? Tokenized::Fate::empty
           : n < cfg.min_tokens                          ? Tokenized::Fate::too_short
           : cfg.max_tokens > 0 && n > cfg.max_tokens    ? Tokenized::Fate::too_long
           : !any_trained                                ? Tokenized::Fate::no_trained_tokens
                                                         : Tokenized::Fate::kept;
  if (t.fate != Tokenized::Fate::kept) {
    t.ids = {};
    t.mask = {};
    return t;
  }
  t.ids.push_back(tokenizer.eos_id());
  t.mask.push_back(r.segments.back().trained ? 1 : 0);
  return t;
}

// The documents kept so far, for exact de-duplication: 16 bytes each (half of the SHA-256 of the
// text; a false match needs ~2^64 documents) in an open-addressing table kept between 3/8 and 3/4
// full: 21 to 43 bytes per document, 1.5x that while it doubles.
class DigestSet {
 public:
  using Digest = std::array<uint64_t, 2>;
  static Digest of_hex(const std::string& hex) {
    Digest d{std::stoull(hex.substr(0, 16), nullptr, 16), std::stoull(hex.substr(16, 16), nullptr, 16)};
    if (d[0] == 0 && d[1] == 0) d[1] = 1;  // all zeros marks an empty slot
    return d;
  }
  bool insert(const Digest& d) {  // false: already there
    if ((used_ + 1) * 4 > slots_.size() * 3) grow();
    size_t mask = slots_.size() - 1;
    for (size_t i = d[0] & mask;; i = (i + 1) & mask) {
      if (slots_[i] == d) return false;
      if (slots_[i][0] == 0 && slots_[i][1] == 0) {
        slots_[i] = d;
        ++used_;
        return true;
      }
    }
  }
  size_t size() const { return used_; }

 private:
  void grow() {
    std::vector<Digest> old(std::max<size_t>(1024, slots_.size() * 2), Digest{0, 0});
    old.swap(slots_);
    used_ = 0;
    for (const auto& d : old)
      if (d[0] != 0 || d[1] != 0) insert(d);
  }
  std::vector<Digest> slots_;
  size_t used_ = 0;
};

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
  std::vector<InputFile> files = list_inputs(cfg);
  SourceReader reader{cfg, model_template(cfg, tokenizer)};
  RecordStream stream(cfg, files);
  std::vector<Record> records;
  RawRecord raw;
  while ((limit <= 0 || static_cast<int64_t>(records.size()) < limit) && stream.next(raw)) {
    try {
      records.push_back(reader.convert(cfg.sources[raw.source], raw));
    } catch (const InputError&) {
      if (cfg.on_error != "skip") throw;
    }
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

namespace {

// data.workers resolved: auto is the cores this process may run on.
int worker_count(const DataConfig& cfg) {
  if (cfg.workers > 0) return static_cast<int>(cfg.workers);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Each file's SHA-256 (the dataset id), files spread over the workers.
void hash_inputs(std::vector<InputFile>& files, int workers) {
  OrderedPool<std::string> pool(workers > 1 ? workers : 0);
  for (const auto& f : files) pool.submit([path = f.path] { return sha256_file(path); });
  for (auto& f : files) f.sha256 = pool.take();
}

std::string human_bytes(double b) {
  char s[32];
  std::snprintf(s, sizeof s, b >= 1e9 ? "%.2f GB" : "%.1f MB", b >= 1e9 ? b / 1e9 : b / 1e6);
  return s;
}

// Holds an exclusive flock on `path` (created) for its lifetime: one process prepares a dataset
// at a time; the others wait and then find it prepared. SIGKILL releases it.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_CREAT | O_RDWR, 0644)) {
    if (fd_ < 0) throw InputError("data.cache_dir: cannot create '" + path + "': " + std::strerror(errno));
    while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~FileLock() { ::close(fd_); }
  void remove() { ::unlink(path_.c_str()); }  // while held: a later process makes a new one

 private:
  std::string path_;
  int fd_;
};

constexpr int kResumeVersion = 1;

// The in-order half of prepare: dedup, the dropped counts, split, weights, packing and shard
// writing, and the checkpoints a killed prepare resumes from. Fed the workers' results in input order.
class Assembler {
 public:
  Assembler(const DataConfig& cfg, const PrepareOptions& opt, const Tokenizer& tokenizer, std::string dir,
            const std::string& id)
      : cfg_(cfg), opt_(opt), tokenizer_(tokenizer), dir_(std::move(dir)), id_(id) {
    for (const char* split : {"eval", "train"})
      writers_.emplace(split, SplitWriter(dir_, split, opt.seq_len + 1, cfg.shard_rows, tokenizer.vocab_size(), id));
  }

  void consume(std::vector<Tokenized>& batch) {
    int shards = 0;
    for (auto& t : batch) shards += consume(t);
    if (batch.empty()) return;
    next_file_ = batch.back().next_file;
    next_at_ = batch.back().next_at;
    shards_since_checkpoint_ += shards;
    int64_t pending = 0;
    for (const auto& [split, w] : writers_) pending += w.pending_size();
    auto now = std::chrono::steady_clock::now();
    // A checkpoint writes the unwritten rows: right after a shard they are few; else every 30 s.
    if (shards_since_checkpoint_ > 0 && (pending * 9 <= (int64_t{64} << 20) || now - last_checkpoint_ > std::chrono::seconds(30)))
      checkpoint();
  }

  // Continues from the last checkpoint in dir_ if every shard it lists is intact; returns false
  // (and the caller starts afresh) otherwise.
  bool resume() {
    std::ifstream in(dir_ + "/state.json");
    if (!in) return false;
    try {
      nlohmann::json s = nlohmann::json::parse(in);
      if (s.at("version") != kResumeVersion || s.at("dataset_id") != id_) return false;
      for (const auto& [split, state] : s.at("splits").items())
        for (const auto& shard : state.at("shards")) {
          std::string path = dir_ + "/" + shard.at("file").get<std::string>();
          std::error_code ec;
          if (!fs::exists(path, ec) || sha256_file(path) != shard.at("sha256")) return false;
        }
      auto count = s.at("digests").get<uint64_t>();
      std::string digests = read_file(dir_ + "/digests.bin", "resume: no digests");
      std::string pending = read_file(dir_ + "/" + s.at("pending_file").get<std::string>(), "resume: no pending rows");
      if (digests.size() < count * sizeof(DigestSet::Digest)) return false;
      for (uint64_t i = 0; i < count; ++i) {
        DigestSet::Digest d;
        std::memcpy(d.data(), digests.data() + i * sizeof d, sizeof d);
        seen_.insert(d);
      }
      fs::resize_file(dir_ + "/digests.bin", count * sizeof(DigestSet::Digest));
      saved_digests_ = count;
      size_t at = 0;
      for (auto& [split, w] : writers_) {
        uint64_t n = s.at("splits").at(split).at("pending_bytes");
        if (at + n > pending.size()) return false;
        w.load(s.at("splits").at(split), pending.substr(at, n));
        at += n;
      }
      records_read_ = s.at("records");
      dropped_ = s.at("dropped").get<std::map<std::string, int64_t>>();
      histogram_ = s.at("length_histogram").get<std::map<std::string, int64_t>>();
      next_file_ = s.at("next_file");
      next_at_ = {s.at("next_offset").get<uint64_t>(), s.at("next_line").get<int64_t>()};
      pending_file_ = s.at("pending_file");
      checkpoints_ = s.at("checkpoint").get<int64_t>();
      return true;
    } catch (const std::exception&) {  // a state from another version or damaged: start afresh
      return false;
    }
  }
  size_t next_file() const { return next_file_; }
  StreamPosition next_at() const { return next_at_; }
  int64_t shards_written() const {
    int64_t n = 0;
    for (const auto& [split, w] : writers_) n += static_cast<int64_t>(w.summary()["shards"].size());
    return n;
  }
  int64_t documents() const { return writers_.at("train").documents() + writers_.at("eval").documents(); }
  int64_t tokens() const { return writers_.at("train").tokens() + writers_.at("eval").tokens(); }

  // The last shards; returns the manifest's splits and stats.
  std::pair<nlohmann::json, nlohmann::json> finish(int64_t& max_id) {
    nlohmann::json splits = nlohmann::json::object();
    int64_t total_tokens = 0;
    max_id = -1;
    for (auto& [split, w] : writers_) {
      w.finish(tokenizer_.eos_id());
      splits[split] = w.summary();
      total_tokens += w.tokens();
      max_id = std::max(max_id, w.max_id());
      if (!opt_.quiet && w.documents() > 0)
        log::line("data: " + split + ": " + std::to_string(w.documents()) + " documents, " + std::to_string(w.tokens()) +
                  " tokens, " + std::to_string(w.rows()) + " rows of " + std::to_string(opt_.seq_len + 1) + " in " +
                  std::to_string(splits[split]["shards"].size()) + " shards", true);
    }
    nlohmann::json stats = {{"records", records_read_}, {"documents", documents()}, {"tokens", total_tokens},
                            {"dropped", dropped_}, {"length_histogram", histogram_}};
    return {splits, stats};
  }

 private:
  int consume(Tokenized& t) {
    using Fate = Tokenized::Fate;
    if (t.fate == Fate::malformed) {
      if (cfg_.on_error != "skip") throw InputError(t.error);
      ++dropped_["malformed"];
      return 0;
    }
    if (t.fate == Fate::failed) throw InputError(t.error);
    ++records_read_;
    if (cfg_.dedup) {
      auto d = DigestSet::of_hex(t.hash);
      if (!seen_.insert(d)) {
        ++dropped_["duplicate"];
        return 0;
      }
      unsaved_digests_.push_back(d);
    }
    if (t.fate != Fate::kept) {
      ++dropped_[fate_name(t.fate)];
      return 0;
    }
    ++histogram_[length_bucket(t.length)];
    const SourceConfig& src = cfg_.sources[t.source];
    std::string split = src.split;
    if (split == "auto") split = seeded_unit(opt_.seed, "split", t.hash) < cfg_.eval_fraction ? "eval" : "train";
    int copies = static_cast<int>(std::floor(src.weight));
    if (seeded_unit(opt_.seed, "weight", t.hash) < src.weight - copies) ++copies;
    int shards = 0;
    for (int k = 0; k < copies; ++k) shards += writers_.at(split).add_document(t.ids, t.mask);
    return shards;
  }

  // Digests appended, then the unwritten rows, then state.json by rename: a kill at any point
  // leaves the previous checkpoint whole.
  void checkpoint() {
    {
      std::ofstream d(dir_ + "/digests.bin", std::ios::binary | std::ios::app);
      d.write(reinterpret_cast<const char*>(unsaved_digests_.data()),
              static_cast<std::streamsize>(unsaved_digests_.size() * sizeof(DigestSet::Digest)));
      if (!d) throw InputError("data.cache_dir: cannot write " + dir_ + "/digests.bin");
    }
    saved_digests_ += unsaved_digests_.size();
    unsaved_digests_.clear();
    nlohmann::json splits = nlohmann::json::object();
    std::string pending;
    for (const auto& [split, w] : writers_) {
      std::string bytes = w.pending_bytes();
      splits[split] = w.state();
      splits[split]["pending_bytes"] = bytes.size();
      pending += bytes;
    }
    std::string old = pending_file_;
    pending_file_ = "pending_" + std::to_string(++checkpoints_) + ".bin";
    write_file_atomic(dir_ + "/" + pending_file_, pending);
    nlohmann::json state = {{"version", kResumeVersion}, {"dataset_id", id_}, {"checkpoint", checkpoints_},
                            {"next_file", next_file_}, {"next_offset", next_at_.offset}, {"next_line", next_at_.line},
                            {"records", records_read_}, {"dropped", dropped_}, {"length_histogram", histogram_},
                            {"digests", saved_digests_}, {"pending_file", pending_file_}, {"splits", splits}};
    write_file_atomic(dir_ + "/state.json", state.dump());
    if (!old.empty()) fs::remove(dir_ + "/" + old);
    shards_since_checkpoint_ = 0;
    last_checkpoint_ = std::chrono::steady_clock::now();
  }

  const DataConfig& cfg_;
  const PrepareOptions& opt_;
  const Tokenizer& tokenizer_;
  std::string dir_, id_;
  std::map<std::string, SplitWriter> writers_;
  DigestSet seen_;
  std::vector<DigestSet::Digest> unsaved_digests_;
  uint64_t saved_digests_ = 0;
  std::map<std::string, int64_t> dropped_{{"empty", 0}, {"too_short", 0}, {"too_long", 0}, {"duplicate", 0},
                                          {"malformed", 0}, {"no_trained_tokens", 0}};
  std::map<std::string, int64_t> histogram_;
  int64_t records_read_ = 0, checkpoints_ = 0;
  size_t next_file_ = 0;
  StreamPosition next_at_;
  int shards_since_checkpoint_ = 0;
  std::string pending_file_;
  std::chrono::steady_clock::time_point last_checkpoint_ = std::chrono::steady_clock::now();
};

// "data: 1.20 GB of 3.00 GB (40%), 24.1 MB/s, 93000 documents, 29.1M tokens, ETA 1m15s" every 10 s.
class Progress {
 public:
  Progress(uint64_t total, uint64_t start, bool quiet) : total_(total), start_bytes_(start), quiet_(quiet) {}
  void update(uint64_t done, int64_t documents, int64_t tokens) {
    auto now = std::chrono::steady_clock::now();
    if (quiet_ || now - last_ < std::chrono::seconds(10)) return;
    last_ = now;
    double seconds = std::chrono::duration<double>(now - begin_).count();
    double rate = static_cast<double>(done - start_bytes_) / std::max(seconds, 1e-3);
    auto eta = static_cast<int64_t>(rate > 0 ? static_cast<double>(total_ - std::min(done, total_)) / rate : 0);
    char line[256];
    std::snprintf(line, sizeof line, "data: %s of %s (%.0f%%), %.1f MB/s, %lld documents, %.1fM tokens, ETA %lldm%02llds",
                  human_bytes(static_cast<double>(done)).c_str(), human_bytes(static_cast<double>(total_)).c_str(),
                  total_ ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0, rate / 1e6,
                  static_cast<long long>(documents), static_cast<double>(tokens) / 1e6,
                  static_cast<long long>(eta / 60), static_cast<long long>(eta % 60));
    log::line(line, true);
  }

 private:
  uint64_t total_, start_bytes_;
  bool quiet_;
  std::chrono::steady_clock::time_point begin_ = std::chrono::steady_clock::now(), last_ = begin_;
};

constexpr size_t kBatchRecords = 256;            // a batch: enough work to hide the hand-over
constexpr size_t kBatchBytes = size_t{1} << 20;  // and little memory per batch in flight

// Reads, tokenises (on the workers) and assembles (here, in input order) into `dir`.
void prepare_into(const DataConfig& cfg, const Tokenizer& tokenizer, const PrepareOptions& opt,
                  const std::vector<InputFile>& files, const std::string& dir, const std::string& id,
                  nlohmann::json& splits, nlohmann::json& stats, int64_t& max_id) {
  const int workers = worker_count(cfg);
  auto resumed = std::make_unique<Assembler>(cfg, opt, tokenizer, dir, id);
  if (resumed->resume()) {
    if (!opt.quiet)
      log::line("data: resuming " + dir + " after " + std::to_string(resumed->shards_written()) + " verified shards", true);
  } else {
    resumed = std::make_unique<Assembler>(cfg, opt, tokenizer, dir, id);  // nothing of a failed resume kept
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir, ec);
    if (ec) throw InputError("data.cache_dir: cannot create '" + dir + "': " + ec.message());
  }
  Assembler& assembler = *resumed;
  RecordStream stream(cfg, files, assembler.next_file(), assembler.next_at());
  uint64_t total = 0;
  for (const auto& f : files) total += f.bytes;
  Progress progress(total, stream.bytes_read(), opt.quiet);
  const ChatTemplate* chat = model_template(cfg, &tokenizer);
  OrderedPool<std::vector<Tokenized>> pool(workers > 1 ? workers : 0);
  const size_t in_flight = workers > 1 ? 2 * static_cast<size_t>(workers) : 1;
  auto submit = [&](std::vector<RawRecord>& batch) {
    pool.submit([&cfg, &tokenizer, chat, records = std::move(batch)] {
      SourceReader reader{cfg, chat};
      std::vector<Tokenized> out;
      out.reserve(records.size());
      for (const auto& r : records) out.push_back(tokenize_record(reader, tokenizer, r));
      return out;
    });
    batch.clear();
    while (pool.pending() >= in_flight) {
      auto done = pool.take();
      assembler.consume(done);
    }
    progress.update(stream.bytes_read(), assembler.documents(), assembler.tokens());
  };
  std::vector<RawRecord> batch;
  size_t batch_bytes = 0;
  RawRecord raw;
  while (stream.next(raw)) {
    batch_bytes += raw.text.size();
    batch.push_back(std::move(raw));
    if (batch.size() >= kBatchRecords || batch_bytes >= kBatchBytes) {
      submit(batch);
      batch_bytes = 0;
    }
  }
  if (!batch.empty()) submit(batch);
  while (pool.pending() > 0) {
    auto done = pool.take();
    assembler.consume(done);
  }
  std::tie(splits, stats) = assembler.finish(max_id);
}

}  // namespace

PreparedDataset prepare_dataset(const DataConfig& cfg, const Tokenizer& tokenizer, const PrepareOptions& opt) {
  std::vector<InputFile> files = list_inputs(cfg);
  hash_inputs(files, worker_count(cfg));
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& f : files) inputs.push_back({{"path", f.path}, {"sha256", f.sha256}, {"bytes", f.bytes}});
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
  auto reuse = [&] {
    std::ifstream existing(out.dir + "/manifest.json");
    if (!existing) return false;
    try {
      out.manifest = nlohmann::json::parse(existing);
      out.reused = true;
      return true;
    } catch (const nlohmann::json::exception&) {
      throw InputError(out.dir + "/manifest.json: not valid JSON; delete the directory to prepare it again");
    }
  };
  if (reuse()) return out;
  std::error_code ec;
  fs::create_directories(cfg.cache_dir.empty() ? "." : cfg.cache_dir, ec);
  if (ec) throw InputError("data.cache_dir: cannot create '" + cfg.cache_dir + "': " + ec.message());
  FileLock lock(out.dir + ".lock");
  if (reuse()) return out;  // prepared by the process that held the lock before us

  // Killed part-way, <id>.partial keeps its shards and checkpoint for the next prepare; bad input
  // removes it (the corrected input is another dataset).
  const std::string partial = out.dir + ".partial";
  nlohmann::json splits, stats;
  int64_t max_id = -1;
  try {
    prepare_into(cfg, tokenizer, opt, files, partial, out.id, splits, stats, max_id);
  } catch (const InputError&) {
    fs::remove_all(partial, ec);
    lock.remove();
    throw;
  }
  const int64_t row_len = opt.seq_len + 1;
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
                  {"stats", stats}};
  std::set<std::string> keep;  // the checkpoint and a killed run's half-written shard are not the dataset's
  for (const auto& [split, entry] : splits.items())
    for (const auto& shard : entry["shards"]) keep.insert(shard["file"].get<std::string>());
  for (const auto& entry : fs::directory_iterator(partial))
    if (!keep.count(entry.path().filename().string())) fs::remove_all(entry.path());
  {
    std::ofstream m(partial + "/manifest.json");
    m << out.manifest.dump(2) << "\n";
    if (!m) throw InputError("data.cache_dir: cannot write " + partial + "/manifest.json");
  }
  fs::rename(partial, out.dir, ec);
  if (ec) throw InputError("data.cache_dir: cannot rename " + partial + " to " + out.dir + ": " + ec.message());
  lock.remove();
  return out;
}

}  // namespace lmforge::data
