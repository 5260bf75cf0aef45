// data/hf_tokenizer.cpp -- BPE from tokenizer.json or GPT-2's vocab.json + merges.txt (turned into
// the same JSON): byte-level (pre-tokenizer regex via PCRE2, GPT-2's byte<->unicode table) or
// SentencePiece-style (U+2581 spaces, byte fallback), with rank-ordered merges, added/special
// tokens and TemplateProcessing. No normalizers; tokenizer.model files are sentencepiece_tokenizer.cpp's.
#include "data/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string_view>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/files.h"
#include "data/chat_template.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/utf8.h"
#include "core/digest.h"
#include "core/errors.h"

namespace lmforge::data {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible space.
const char* kSpace = "\xe2\x96\x81";

// GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols, whitespace runs.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Splits a UTF-8 string into its characters (invalid bytes become one-byte pieces).
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + len > s.size()) len = 1;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

// The steps of a normalizer/pre-tokenizer: a {"type": "Sequence", list_key: [...]} or one step.
std::vector<json> sequence_parts(const json& node, const char* list_key) {
  std::vector<json> parts;
  if (node.is_object() && node.value("type", "") == "Sequence" && node.contains(list_key) && node[list_key].is_array())
    parts.assign(node[list_key].begin(), node[list_key].end());
  else if (node.is_object())
    parts.push_back(node);
  return parts;
}

std::string token_content(const json& v) {  // "<s>" or {"content": "<s>", ...}
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

class BpeTokenizer : public Tokenizer {
 public:
  BpeTokenizer(const json& j, const json& config, const std::string& path, std::string fingerprint)
      : path_(path), fingerprint_(std::move(fingerprint)), bytes_(byte_to_unicode()) {
    for (int b = 0; b < 256; ++b) unicode_to_byte_[bytes_[b]] = static_cast<unsigned char>(b);
    const json& model = j["model"];
    if (!model.contains("vocab") || !model["vocab"].is_object()) fail("model.vocab is not an object");
    for (const auto& [token, id] : model["vocab"].items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) fail("model.vocab['" + token + "'] is not an id");
      add_token(token, id.get<int32_t>());
    }
    if (model.contains("merges") && model["merges"].is_array()) {
      int rank = 0;
      for (const auto& m : model["merges"]) {
        std::string a, b;
        if (m.is_string()) {  // "a b" (older files)
          auto text = m.get<std::string>();
          auto space = text.find(' ');
          if (space == std::string::npos) fail("merge '" + text + "' is not 'a b'");
          a = text.substr(0, space);
          b = text.substr(space + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
          a = m[0].get<std::string>();
          b = m[1].get<std::string>();
        } else {
          fail("a merge is neither 'a b' nor [a, b]");
        }
        ranks_.emplace(a + '\0' + b, rank++);
      }
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& t : j["added_tokens"]) {
        if (!t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") || !t["content"].is_string())
          fail("added_tokens entries need an id and a content");
        std::string content = t["content"].get<std::string>();
        add_token(content, t["id"].get<int32_t>());
        added_.emplace_back(content, t["id"].get<int32_t>());
        if (t.value("special", false)) special_.insert({t["id"].get<int32_t>(), true});
      }
      std::sort(added_.begin(), added_.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    }
    byte_fallback_ = model.value("byte_fallback", false);
    if (model.contains("unk_token") && model["unk_token"].is_string() && ids_.count(model["unk_token"].get<std::string>()))
      unk_ = ids_.at(model["unk_token"].get<std::string>());
    read_normalizer(j.contains("normalizer") ? j["normalizer"] : json());
    read_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json());
    if (!byte_level_ && !metaspace_)
      fail("neither a byte-level BPE (ByteLevel pre-tokenizer) nor a SentencePiece-style one (spaces as U+2581)");
    read_post_processor(j.contains("post_processor") ? j["post_processor"] : json());
    read_special_tokens(config);
    for (const auto& a : added_)
      if (!a.first.empty()) added_first_bytes_[static_cast<unsigned char>(a.first[0])] = true;
  }
  ~BpeTokenizer() override {
    if (regex_) pcre2_code_free(regex_);
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(prefix_);
    size_t start = 0;
    for (size_t i = 0; i <= text.size();) {  // added tokens split the text before the regex runs
      const std::pair<std::string, int32_t>* hit = nullptr;
      if (i < text.size() && added_first_bytes_[static_cast<unsigned char>(text[i])])
        for (const auto& a : added_)
          if (!a.first.empty() && text.compare(i, a.first.size(), a.first) == 0) {
            hit = &a;
            break;
          }
      if (hit || i == text.size()) {
        encode_plain(text.substr(start, i - start), ids, /*first=*/start == 0);
        if (!hit) break;
        ids.push_back(hit->second);
        i += hit->first.size();
        start = i;
      } else {
        ++i;
      }
    }
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  std::vector<int32_t> encode_rendered(const std::string& text) const override {
    std::vector<int32_t> ids = encode(text);
    return std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(prefix_.size()),
                                ids.end() - static_cast<std::ptrdiff_t>(suffix_.size()));
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || id >= static_cast<int32_t>(tokens_.size()) || special_.count(id)) continue;
      const std::string& token = tokens_[id];
      if (std::find_if(added_.begin(), added_.end(), [&](const auto& a) { return a.second == id; }) != added_.end()) {
        out += token;
        continue;
      }
      if (!byte_level_) {
        unsigned byte = 0;
        if (token.size() == 6 && std::sscanf(token.c_str(), "<0x%2X>", &byte) == 1) {
          out += static_cast<char>(byte);
        } else {
          for (const auto& ch : utf8_chars(token)) out += ch == kSpace ? std::string(" ") : ch;
        }
        continue;
      }
      for (const auto& ch : utf8_chars(token)) {
        auto it = unicode_to_byte_.find(ch);
        out += it != unicode_to_byte_.end() ? std::string(1, static_cast<char>(it->second)) : ch;
      }
    }
    if (!byte_level_ && prepend_space_ && !out.empty() && out[0] == ' ') out.erase(0, 1);  // the Strip decoder
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  std::string piece(int32_t id) const override {
    return id >= 0 && id < static_cast<int32_t>(tokens_.size()) ? tokens_[id] : "";
  }
  std::string fingerprint() const override { return fingerprint_; }

  // Byte-level files only: SentencePiece-style tokenizer.json (U+2581 spaces, byte fallback) has
  // no scores to give, and GGUF's SentencePiece kind needs them.
  std::optional<TokenizerDescription> describe() const override {
    if (!byte_level_ || metaspace_) return std::nullopt;
    TokenizerDescription d;
    d.kind = TokenizerDescription::Kind::byte_level_bpe;
    d.tokens = tokens_;
    d.token_types.assign(tokens_.size(), TokenizerDescription::normal);
    for (size_t id = 0; id < tokens_.size(); ++id)
      if (tokens_[id].empty() || ids_.at(tokens_[id]) != static_cast<int32_t>(id))
        d.token_types[id] = TokenizerDescription::unused;  // a gap in the ids, or a duplicate spelling
    for (const auto& [content, id] : added_)
      d.token_types[id] = special_.count(id) ? TokenizerDescription::control : TokenizerDescription::user_defined;
    d.merges.resize(ranks_.size());
    for (const auto& [pair, rank] : ranks_) {
      std::string merge = pair;
      merge[merge.find('\0')] = ' ';
      d.merges[rank] = merge;
    }
    d.pre_pattern = pattern_;
    d.add_prefix_space = add_prefix_space_;
    d.prefix_ids = prefix_;
    d.suffix_ids = suffix_;
    d.unk_id = unk_;
    return d;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw InputError(path_ + ": " + what); }

  void add_token(const std::string& token, int32_t id) {
    if (static_cast<size_t>(id) >= tokens_.size()) tokens_.resize(static_cast<size_t>(id) + 1);
    tokens_[id] = token;
    ids_[token] = id;
  }

  // bos/eos/pad (skipped by decode) and additional_special_tokens (decoded as text) from a
  // tokenizer_config.json-shaped object; each becomes an added token, new ones get the next ids.
  void read_special_tokens(const json& config) {
    if (!config.is_object()) return;
    auto add = [&](const std::string& content, bool skip_on_decode) {
      if (content.empty()) return -1;
      if (!ids_.count(content)) add_token(content, static_cast<int32_t>(tokens_.size()));
      int32_t id = ids_.at(content);
      if (std::find_if(added_.begin(), added_.end(), [&](const auto& a) { return a.second == id; }) == added_.end())
        added_.emplace_back(content, id);
      if (skip_on_decode) special_.insert({id, true});
      return id;
    };
    using Slot = std::pair<const char*, int32_t*>;
    for (auto [key, target] : {Slot{"bos_token", &bos_}, Slot{"eos_token", &eos_}, Slot{"pad_token", &pad_}})
      if (config.contains(key)) *target = add(token_content(config[key]), true);
    for (const auto& t : config.value("additional_special_tokens", json::array())) add(token_content(t), false);
    std::sort(added_.begin(), added_.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  }

  // SentencePiece-style files (Llama 2, Mistral) spell spaces as U+2581 in the normalizer:
  // Prepend("\u2581") then Replace(" " -> "\u2581").
  void read_normalizer(const json& n) {
    for (const auto& part : sequence_parts(n, "normalizers")) {
      std::string type = part.value("type", "");
      if (type == "Prepend" && part.value("prepend", "") == kSpace) {
        prepend_space_ = true;
      } else if (type == "Replace" && part.value("content", "") == kSpace) {
        metaspace_ = true;
      } else if (!type.empty() && type != "NFC" && type != "NFKC") {
        fail("normalizer '" + type + "' is not supported");
      }
    }
  }

  // ByteLevel alone (GPT-2 regex), a Sequence of Split(regex) + ByteLevel(use_regex false), or
  // Metaspace (the older spelling of SentencePiece-style spaces).
  void read_pre_tokenizer(const json& p) {
    std::string pattern;
    for (const auto& part : sequence_parts(p, "pretokenizers")) {
      std::string type = part.value("type", "");
      if (type == "Metaspace") {
        metaspace_ = true;
        prepend_space_ = part.value("add_prefix_space", true) && part.value("prepend_scheme", "always") != "never";
        prepend_first_only_ = part.value("prepend_scheme", "always") == "first";
      } else if (type == "ByteLevel") {
        byte_level_ = true;
        add_prefix_space_ = part.value("add_prefix_space", false);
        if (part.value("use_regex", true) && pattern.empty()) pattern = kGpt2Pattern;
      } else if (type == "Split" && part.contains("pattern") && part["pattern"].is_object()) {
        const json& pat = part["pattern"];
        if (pat.contains("Regex") && pat["Regex"].is_string()) pattern = pat["Regex"].get<std::string>();
      } else if (type != "Digits" && type != "Punctuation") {
        fail("pre_tokenizer part '" + type + "' is not supported");
      }
    }
    if (pattern.empty()) return;
    pattern_ = pattern;
    int code = 0;
    PCRE2_SIZE offset = 0;
    regex_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                           &code, &offset, nullptr);
    if (!regex_) fail("pre-tokenizer regex does not compile at offset " + std::to_string(offset));
    pcre2_jit_compile(regex_, PCRE2_JIT_COMPLETE);  // several times faster; without JIT pcre2_match interprets
  }

  // TemplateProcessing's "single" template: special ids before and after the sequence.
  void read_post_processor(const json& p) {
    if (!p.is_object()) return;
    if (p.value("type", "") == "Sequence" && p.contains("processors")) {
      for (const auto& part : p["processors"]) read_post_processor(part);
      return;
    }
    if (p.value("type", "") != "TemplateProcessing" || !p.contains("single")) return;
    bool after = false;
    for (const auto& item : p["single"]) {
      if (!item.is_object()) continue;
      if (item.contains("Sequence")) {
        after = true;
        continue;
      }
      if (!item.contains("SpecialToken")) continue;
      std::string name = item["SpecialToken"].value("id", "");
      std::vector<int32_t> special_ids;
      if (p.contains("special_tokens") && p["special_tokens"].contains(name)) {
        for (const auto& id : p["special_tokens"][name].value("ids", json::array()))
          if (id.is_number_integer()) special_ids.push_back(id.get<int32_t>());
      }
      else if (ids_.count(name))
        special_ids.push_back(ids_.at(name));
      auto& target = after ? suffix_ : prefix_;
      target.insert(target.end(), special_ids.begin(), special_ids.end());
    }
  }

  // One stretch of text between added tokens; first: it starts the text.
  void encode_plain(std::string text, std::vector<int32_t>& ids, bool first) const {
    if (text.empty()) return;
    if (!byte_level_) return encode_metaspace(text, ids, first);
    if (add_prefix_space_ && text[0] != ' ') text = " " + text;
    std::vector<std::string_view> pieces;
    const std::string_view all(text);
    if (!regex_) {
      pieces.push_back(all);
    } else {
      pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex_, nullptr);
      size_t start = 0, emitted = 0;
      uint32_t options = 0;  // the first match checks the whole text's UTF-8; later ones need not again
      while (start < text.size()) {
        int rc = pcre2_match(regex_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, options, match,
                             nullptr);
        options = PCRE2_NO_UTF_CHECK;
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_SIZE bad = pcre2_get_startchar(match);  // for UTF-8 errors: the offending byte
          pcre2_match_data_free(match);
          throw InputError("text to tokenize is not valid UTF-8 at byte " + std::to_string(bad) +
                           " of its piece between special tokens (" + path_ + ")");
        }
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
        if (ov[0] > emitted) pieces.push_back(all.substr(emitted, ov[0] - emitted));  // a gap: its own piece
        if (ov[1] > ov[0]) pieces.push_back(all.substr(ov[0], ov[1] - ov[0]));
        emitted = std::max<size_t>(emitted, ov[1]);
        start = ov[1] > ov[0] ? ov[1] : start + utf8_chars(text.substr(start, 4))[0].size();
      }
      pcre2_match_data_free(match);
      if (emitted < text.size()) pieces.push_back(all.substr(emitted));
    }
    for (auto piece : pieces) encode_piece(piece, ids);
  }

  // One pre-token through the byte table and the merges. Text repeats its words, so the ids of
  // each piece are cached: a hit costs one hash lookup instead of a merge loop (bench/RESULTS.md).
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
    std::string key(piece);
    CacheStripe& stripe = cache_[std::hash<std::string_view>{}(piece) % cache_.size()];
    {
      std::lock_guard<std::mutex> lock(stripe.mutex);
      auto hit = stripe.map.find(key);
      if (hit != stripe.map.end()) {
        ids.insert(ids.end(), hit->second.begin(), hit->second.end());
        return;
      }
    }
    std::vector<std::string> symbols;
    for (unsigned char c : piece) symbols.push_back(bytes_[c]);
    merge(symbols);
    std::vector<int32_t> piece_ids;
    for (const auto& s : symbols) {
      auto it = ids_.find(s);
      if (it == ids_.end()) throw InputError(path_ + ": token '" + s + "' is not in the vocabulary");
      piece_ids.push_back(it->second);
    }
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    std::lock_guard<std::mutex> lock(stripe.mutex);
    if (stripe.map.size() >= kCacheEntries / cache_.size()) stripe.map.clear();
    stripe.map.emplace(std::move(key), std::move(piece_ids));
  }

  // SentencePiece-style: spaces become U+2581, words start at a U+2581 that follows another
  // character, BPE runs per word over UTF-8 characters, unknown characters fall back to <0xXX>
  // byte tokens (or unk). NOTE: splitting into words first is lmforge's choice for speed; merges
  // across a word start (only runs of U+2581) are the one place it can differ from HF.
  void encode_metaspace(const std::string& text, std::vector<int32_t>& ids, bool first) const {
    std::string normalized = prepend_space_ && (first || !prepend_first_only_) ? kSpace : "";
    for (char c : text) normalized += c == ' ' ? std::string(kSpace) : std::string(1, c);
    std::vector<std::string> chars = utf8_chars(normalized);
    std::vector<std::string> word;
    auto flush = [&] {
      merge(word);
      for (const auto& s : word) {
        auto it = ids_.find(s);
        if (it != ids_.end()) {
          ids.push_back(it->second);
        } else if (byte_fallback_) {
          for (unsigned char c : s) {
            char name[8];
            std::snprintf(name, sizeof name, "<0x%02X>", c);
            auto byte = ids_.find(name);
            if (byte == ids_.end()) fail(std::string("byte token ") + name + " is not in the vocabulary");
            ids.push_back(byte->second);
          }
        } else if (unk_ >= 0) {
          ids.push_back(unk_);
        } else {
          fail("token '" + s + "' is not in the vocabulary and there is no unk_token");
        }
      }
      word.clear();
    };
    for (size_t i = 0; i < chars.size(); ++i) {
      if (chars[i] == kSpace && i > 0 && chars[i - 1] != kSpace) flush();
      word.push_back(chars[i]);
    }
    flush();
  }

  // Applies merges lowest rank first until no adjacent pair has one. symbols: in/out.
  void merge(std::vector<std::string>& symbols) const {
    std::string key;             // "a\0b": one buffer for every lookup, no allocation per pair
    std::vector<int> pair_rank;  // [i]: rank of (symbols[i], symbols[i + 1]); -1 if no merge
    while (symbols.size() > 1) {
      pair_rank.assign(symbols.size() - 1, -1);
      int best = -1;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        key.assign(symbols[i]).append(1, '\0').append(symbols[i + 1]);
        auto it = ranks_.find(key);
        if (it == ranks_.end()) continue;
        pair_rank[i] = it->second;
        if (best < 0 || it->second < best) best = it->second;
      }
      if (best < 0) return;
      size_t out = 0;  // merges every occurrence of the best pair, left to right, in place
      for (size_t i = 0; i < symbols.size(); ++i, ++out) {
        bool merged = i + 1 < symbols.size() && pair_rank[i] == best;
        if (merged) symbols[i] += symbols[i + 1];
        if (out != i) symbols[out] = std::move(symbols[i]);
        if (merged) ++i;
      }
      symbols.resize(out);
    }
  }

  std::string path_, fingerprint_;
  std::array<std::string, 256> bytes_;
  std::unordered_map<std::string, unsigned char> unicode_to_byte_;
  std::vector<std::string> tokens_;                  // [id] -> token
  std::unordered_map<std::string, int32_t> ids_;     // token -> id
  std::unordered_map<std::string, int> ranks_;       // "a\0b" -> merge rank
  std::vector<std::pair<std::string, int32_t>> added_;  // longest first
  std::map<int32_t, bool> special_;
  std::vector<int32_t> prefix_, suffix_;
  pcre2_code* regex_ = nullptr;
  std::string pattern_;  // regex_'s source
  std::array<bool, 256> added_first_bytes_{};  // [byte]: some added token starts with it
  // Pre-token -> ids. Bounded (cleared when full) so adversarial text cannot grow it without
  // limit: 2^18 entries of a few short strings stay under ~50 MB.
  static constexpr size_t kCacheEntries = size_t{1} << 18;
  // Striped by the piece's hash, each stripe with its own lock: data prepare's worker threads
  // encode at once, and one lock taken per piece by all of them would serialise them.
  struct CacheStripe {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  mutable std::array<CacheStripe, 32> cache_;
  bool add_prefix_space_ = false;  // byte level: a space before text that lacks one
  bool byte_level_ = false, metaspace_ = false;
  bool prepend_space_ = false;     // metaspace: U+2581 before the text (removed again on decode)
  bool prepend_first_only_ = false;  // Metaspace prepend_scheme "first": not after an added token
  bool byte_fallback_ = false;     // metaspace: unknown characters as <0xXX> byte tokens
  int32_t unk_ = -1;
  int32_t bos_ = -1, eos_ = -1, pad_ = -1;
};

}  // namespace

namespace {

json read_config_beside(const fs::path& file) {
  fs::path config_path = file.parent_path() / "tokenizer_config.json";
  return fs::exists(config_path) ? read_json_file(config_path.string()) : json::object();
}

// `special` (from lmforge's config) over the files' tokenizer_config.json; also returns a short
// hash of what was overridden, for the fingerprint ("" when nothing was).
std::string apply_special_tokens(json& config, const SpecialTokens& special) {
  if (special.empty()) return "";
  if (!config.is_object()) config = json::object();
  if (!special.bos.empty()) config["bos_token"] = special.bos;
  if (!special.eos.empty()) config["eos_token"] = special.eos;
  if (!special.pad.empty()) config["pad_token"] = special.pad;
  json extra = config.value("additional_special_tokens", json::array());
  for (const auto& t : special.extra) extra.push_back(t);
  config["additional_special_tokens"] = extra;
  return "-" + sha256_hex(config.dump()).substr(0, 8);
}

std::unique_ptr<Tokenizer> tokenizer_json(const fs::path& json_path, json config, const SpecialTokens& special) {
  json j = read_json_file(json_path.string());
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw InputError(json_path.string() + ": no \"model\" object");
  std::string type = j["model"].value("type", "BPE");
  if (type != "BPE") throw InputError(json_path.string() + ": a " + type + " tokenizer is not supported (BPE is)");
  std::string suffix = apply_special_tokens(config, special);
  return std::make_unique<BpeTokenizer>(j, config, json_path.string(),
                                        "hf-bpe-" + sha256_file(json_path.string()).substr(0, 16) + suffix);
}

// GPT-2's two files as the tokenizer.json they are equivalent to: a byte-level BPE with the GPT-2 regex.
std::unique_ptr<Tokenizer> gpt2_files(const fs::path& vocab_path, const fs::path& merges_path, json config,
                                      const SpecialTokens& special) {
  if (!fs::exists(merges_path))
    throw InputError(merges_path.string() + ": missing; " + vocab_path.filename().string() + " needs it beside it");
  json vocab = read_json_file(vocab_path.string());
  if (!vocab.is_object()) throw InputError(vocab_path.string() + ": not a {token: id} object");
  json merges = json::array();
  std::ifstream in(merges_path);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    if (line.find(' ') == std::string::npos || line.find(' ') != line.rfind(' '))
      throw InputError(merges_path.string() + ":" + std::to_string(number) + ": '" + line + "' is not a merge 'a b'");
    merges.push_back(line);
  }
  json j = {{"model", {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}}},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}};
  const char* eot = "<|endoftext|>";
  if (special.eos.empty() && !config.contains("eos_token") && j["model"]["vocab"].contains(eot))
    config["eos_token"] = config["bos_token"] = eot;
  std::string suffix = apply_special_tokens(config, special);
  std::string digest = sha256_hex(sha256_file(vocab_path.string()) + sha256_file(merges_path.string()));
  return std::make_unique<BpeTokenizer>(j, config, vocab_path.string(), "gpt2-bpe-" + digest.substr(0, 16) + suffix);
}

}  // namespace

std::unique_ptr<Tokenizer> load_bpe_files(const std::string& path, const SpecialTokens& special) {
  fs::path p(path);
  if (fs::is_directory(p)) {
    fs::path dir = p;
    for (const char* name : {"tokenizer.json", "vocab.json", "encoder.json"})
      if (fs::exists(dir / name)) {
        p = dir / name;
        break;
      }
    if (p == dir) throw InputError(path + ": holds no tokenizer.json, vocab.json or encoder.json");
  }
  if (!fs::exists(p)) throw InputError(p.string() + ": no such file");
  json config = read_config_beside(p);
  if (p.filename() == "vocab.json") return gpt2_files(p, p.parent_path() / "merges.txt", config, special);
  if (p.filename() == "encoder.json") return gpt2_files(p, p.parent_path() / "vocab.bpe", config, special);
  return tokenizer_json(p, config, special);
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& dir) {
  fs::path json_path = fs::path(dir) / "tokenizer.json", sp_path = fs::path(dir) / "tokenizer.model";
  std::unique_ptr<Tokenizer> tok;
  fs::path vocab_path = fs::path(dir) / "vocab.json";
  if (fs::exists(json_path)) tok = tokenizer_json(json_path, read_config_beside(json_path), {});
  else if (fs::exists(vocab_path)) tok = gpt2_files(vocab_path, fs::path(dir) / "merges.txt", read_config_beside(vocab_path), {});
  else if (fs::exists(sp_path)) tok = load_sentencepiece_model(sp_path.string(), {});
  if (tok) tok->attach_chat_template(dir);
  return tok;
}

namespace {

// The byte tokenizer as a tokenizer.json: ids 0..255 are GPT-2's printable byte symbols, no merges,
// no regex (the text is one piece), so every byte stays its own token as ByteTokenizer encodes.
json byte_tokenizer_json(const Tokenizer& tok) {
  json vocab = json::object();
  std::array<std::string, 256> symbols = byte_to_unicode();
  for (int b = 0; b < 256; ++b) vocab[symbols[b]] = b;
  json added = json::array();
  for (int32_t id : {tok.bos_id(), tok.eos_id()}) {
    vocab[tok.piece(id)] = id;
    added.push_back({{"id", id}, {"content", tok.piece(id)}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
}

void copy_into(const fs::path& from, const fs::path& to) {
  if (fs::absolute(from) != fs::absolute(to)) fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

}  // namespace

void save_hf_tokenizer_files(const TokenizerConfig& cfg, const Tokenizer& tok, const std::string& dir) {
  fs::path out(dir), source(cfg.path), source_dir;
  std::string tokenizer_class = "PreTrainedTokenizerFast";  // what AutoTokenizer builds from tokenizer.json
  if (cfg.kind == "byte") {
    write_file_atomic((out / "tokenizer.json").string(), byte_tokenizer_json(tok).dump() + "\n");
  } else if (cfg.kind == "sentencepiece") {
    fs::path model = fs::is_directory(source) ? source / "tokenizer.model" : source;
    copy_into(model, out / "tokenizer.model");
    source_dir = model.parent_path();
    tokenizer_class = "LlamaTokenizer";  // the SentencePiece class AutoTokenizer takes for a bare tokenizer.model
  } else {
    fs::path file = source;
    if (fs::is_directory(source))
      for (const char* name : {"tokenizer.json", "vocab.json", "encoder.json"})
        if (fs::exists(source / name)) {
          file = source / name;
          break;
        }
    source_dir = file.parent_path();
    if (file.filename() == "tokenizer.json") {
      copy_into(file, out / "tokenizer.json");
    } else {
      copy_into(file, out / "vocab.json");
      copy_into(source_dir / (file.filename() == "vocab.json" ? "merges.txt" : "vocab.bpe"), out / "merges.txt");
      tokenizer_class = "GPT2Tokenizer";
    }
  }
  json config = json::object();
  if (!source_dir.empty() && fs::exists(source_dir / "tokenizer_config.json"))
    config = read_json_file((source_dir / "tokenizer_config.json").string());
  if (!config.is_object()) config = json::object();
  if (!config.contains("tokenizer_class")) config["tokenizer_class"] = tokenizer_class;
  json special_map = json::object();
  using Slot = std::pair<const char*, int32_t>;
  for (auto [key, id] : {Slot{"bos_token", tok.bos_id()}, Slot{"eos_token", tok.eos_id()}, Slot{"pad_token", tok.pad_id()}})
    if (id >= 0) special_map[key] = config[key] = tok.piece(id);
  json extra = config.value("additional_special_tokens", json::array());
  for (const auto& t : cfg.special.extra)
    if (std::find(extra.begin(), extra.end(), t) == extra.end()) extra.push_back(t);
  if (!extra.empty()) special_map["additional_special_tokens"] = config["additional_special_tokens"] = extra;
  if (const ChatTemplate* t = tok.chat_template()) config["chat_template"] = t->text();
  config["clean_up_tokenization_spaces"] = false;  // decode must not drop spaces lmforge keeps
  write_file_atomic((out / "tokenizer_config.json").string(), config.dump(2) + "\n");
  write_file_atomic((out / "special_tokens_map.json").string(), special_map.dump(2) + "\n");
  fs::path generation_file = out / "generation_config.json";
  json generation = fs::exists(generation_file) ? read_json_file(generation_file.string()) : json::object();
  if (tok.bos_id() >= 0) generation["bos_token_id"] = tok.bos_id();
  if (tok.eos_id() >= 0) generation["eos_token_id"] = tok.eos_id();
  if (tok.pad_id() >= 0) generation["pad_token_id"] = tok.pad_id();
  write_file_atomic(generation_file.string(), generation.dump(2) + "\n");
}

}  // namespace lmforge::data
