// data/hf_tokenizer.cpp -- byte-level BPE from tokenizer.json: pre-tokenizer regex via PCRE2,
// GPT-2's byte<->unicode table, rank-ordered merges, added/special tokens, TemplateProcessing.
// No normalizers and no SentencePiece: Debian's libsentencepiece loads a second protobuf that
// crashes beside LibTorch's at start-up, so tokenizer.model is refused with that reason.
#include "data/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "trainer/digest.h"
#include "trainer/errors.h"
#include "trainer/hf_model.h"

namespace lmforge::data {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols, whitespace runs.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

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

// GPT-2's reversible byte -> printable unicode table: printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100 onwards, so no token contains whitespace or control characters.
std::array<std::string, 256> byte_to_unicode() {
  std::array<std::string, 256> table;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = utf8_of(printable ? b : next++);
  }
  return table;
}

std::string token_content(const json& v) {  // "<s>" or {"content": "<s>", ...}
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

class ByteLevelBpe : public Tokenizer {
 public:
  ByteLevelBpe(const json& j, const json& config, const std::string& path, std::string fingerprint)
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
    read_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json());
    read_post_processor(j.contains("post_processor") ? j["post_processor"] : json());
    bos_ = id_of_special(config, "bos_token");
    eos_ = id_of_special(config, "eos_token");
  }
  ~ByteLevelBpe() override {
    if (regex_) pcre2_code_free(regex_);
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(prefix_);
    size_t start = 0;
    for (size_t i = 0; i <= text.size();) {  // added tokens split the text before the regex runs
      const std::pair<std::string, int32_t>* hit = nullptr;
      for (const auto& a : added_)
        if (i < text.size() && !a.first.empty() && text.compare(i, a.first.size(), a.first) == 0) {
          hit = &a;
          break;
        }
      if (hit || i == text.size()) {
        encode_plain(text.substr(start, i - start), ids);
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

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || id >= static_cast<int32_t>(tokens_.size()) || special_.count(id)) continue;
      const std::string& token = tokens_[id];
      if (std::find_if(added_.begin(), added_.end(), [&](const auto& a) { return a.second == id; }) != added_.end()) {
        out += token;
        continue;
      }
      for (const auto& ch : utf8_chars(token)) {
        auto it = unicode_to_byte_.find(ch);
        out += it != unicode_to_byte_.end() ? std::string(1, static_cast<char>(it->second)) : ch;
      }
    }
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  std::string fingerprint() const override { return fingerprint_; }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw InputError(path_ + ": " + what); }

  void add_token(const std::string& token, int32_t id) {
    if (static_cast<size_t>(id) >= tokens_.size()) tokens_.resize(static_cast<size_t>(id) + 1);
    tokens_[id] = token;
    ids_[token] = id;
  }

  int32_t id_of_special(const json& config, const std::string& key) const {
    if (!config.is_object() || !config.contains(key)) return -1;
    auto it = ids_.find(token_content(config[key]));
    return it == ids_.end() ? -1 : it->second;
  }

  // ByteLevel alone (GPT-2 regex) or a Sequence of Split(regex) + ByteLevel(use_regex false).
  void read_pre_tokenizer(const json& p) {
    std::string pattern;
    bool byte_level = false;
    std::vector<json> parts;
    if (p.is_object() && p.value("type", "") == "Sequence" && p.contains("pretokenizers"))
      parts.assign(p["pretokenizers"].begin(), p["pretokenizers"].end());
    else if (p.is_object())
      parts.push_back(p);
    for (const auto& part : parts) {
      std::string type = part.value("type", "");
      if (type == "ByteLevel") {
        byte_level = true;
        add_prefix_space_ = part.value("add_prefix_space", false);
        if (part.value("use_regex", true) && pattern.empty()) pattern = kGpt2Pattern;
      } else if (type == "Split" && part.contains("pattern") && part["pattern"].is_object()) {
        const json& pat = part["pattern"];
        if (pat.contains("Regex") && pat["Regex"].is_string()) pattern = pat["Regex"].get<std::string>();
      } else if (type != "Digits" && type != "Punctuation") {
        fail("pre_tokenizer part '" + type + "' is not supported");
      }
    }
    if (!byte_level) fail("not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer)");
    if (pattern.empty()) return;
    int code = 0;
    PCRE2_SIZE offset = 0;
    regex_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                           &code, &offset, nullptr);
    if (!regex_) fail("pre-tokenizer regex does not compile at offset " + std::to_string(offset));
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

  void encode_plain(std::string text, std::vector<int32_t>& ids) const {
    if (text.empty()) return;
    if (add_prefix_space_ && text[0] != ' ') text = " " + text;
    std::vector<std::string> pieces;
    if (!regex_) {
      pieces.push_back(text);
    } else {
      pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex_, nullptr);
      size_t start = 0, emitted = 0;
      while (start < text.size()) {
        int rc = pcre2_match(regex_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, 0, match, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          pcre2_match_data_free(match);
          throw InputError("text to tokenize is not valid UTF-8 (" + path_ + ")");
        }
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
        if (ov[0] > emitted) pieces.push_back(text.substr(emitted, ov[0] - emitted));  // a gap: its own piece
        if (ov[1] > ov[0]) pieces.push_back(text.substr(ov[0], ov[1] - ov[0]));
        emitted = std::max<size_t>(emitted, ov[1]);
        start = ov[1] > ov[0] ? ov[1] : start + utf8_chars(text.substr(start, 4))[0].size();
      }
      pcre2_match_data_free(match);
      if (emitted < text.size()) pieces.push_back(text.substr(emitted));
    }
    for (const auto& piece : pieces) {
      std::vector<std::string> symbols;
      for (unsigned char c : piece) symbols.push_back(bytes_[c]);
      merge(symbols);
      for (const auto& s : symbols) {
        auto it = ids_.find(s);
        if (it == ids_.end()) throw InputError(path_ + ": token '" + s + "' is not in the vocabulary");
        ids.push_back(it->second);
      }
    }
  }

  // Applies merges lowest rank first until no adjacent pair has one. symbols: in/out.
  void merge(std::vector<std::string>& symbols) const {
    while (symbols.size() > 1) {
      int best = -1;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        auto it = ranks_.find(symbols[i] + '\0' + symbols[i + 1]);
        if (it != ranks_.end() && (best < 0 || it->second < best)) best = it->second;
      }
      if (best < 0) return;
      std::vector<std::string> next;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size()) {
          auto it = ranks_.find(symbols[i] + '\0' + symbols[i + 1]);
          if (it != ranks_.end() && it->second == best) {
            next.push_back(symbols[i] + symbols[i + 1]);
            ++i;
            continue;
          }
        }
        next.push_back(symbols[i]);
      }
      symbols.swap(next);
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
  bool add_prefix_space_ = false;
  int32_t bos_ = -1, eos_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& dir) {
  fs::path json_path = fs::path(dir) / "tokenizer.json", sp_path = fs::path(dir) / "tokenizer.model";
  fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  json config = fs::exists(config_path) ? trainer::read_json_file(config_path.string()) : json();
  if (fs::exists(json_path)) {
    json j = trainer::read_json_file(json_path.string());
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
      throw InputError(json_path.string() + ": no \"model\" object");
    std::string type = j["model"].value("type", "BPE");
    bool byte_level = j.dump().find("\"ByteLevel\"") != std::string::npos;
    if (type == "BPE" && byte_level)
      return std::make_unique<ByteLevelBpe>(j, config, json_path.string(),
                                            "hf-bpe-" + sha256_file(json_path.string()).substr(0, 16));
    throw InputError(json_path.string() + ": a " + type +
                     " tokenizer without a ByteLevel pre-tokenizer is not supported (byte-level BPE is)");
  }
  if (fs::exists(sp_path))
    throw InputError(sp_path.string() + ": SentencePiece models are not supported; pass token ids instead");
  return nullptr;
}

}  // namespace lmforge::data
