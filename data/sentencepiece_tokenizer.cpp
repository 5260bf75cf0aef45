// data/sentencepiece_tokenizer.cpp -- reads a SentencePiece .model (a ModelProto) with a small
// protobuf wire-format reader and encodes as spm_encode does: the normalizer (precompiled charsmap
// trie, whitespace rules, U+2581 spaces), Unigram Viterbi or score-ordered BPE, byte fallback.
//
// Why not libsentencepiece: Debian's build links its own libprotobuf, which clashes with
// LibTorch's when both load into one process. A helper process costs a pipe round trip per call
// and a second binary to ship; RTLD_DEEPBIND breaks C++ runtime symbol sharing. The .model format
// is documented (sentencepiece_model.proto) and stable, and the encoding rules are short, so we
// read it ourselves: no dependency, no second process. Checked against spm_encode in
// tests/data/sentencepiece_tokenizer_test.sh. The BPE here picks pairs by piece score one at a
// time (SentencePiece's rule), which HF-style rank merges in hf_tokenizer.cpp do not reproduce.
#include "data/sentencepiece_tokenizer.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "core/digest.h"
#include "core/errors.h"
#include "core/files.h"

namespace lmforge::data {

namespace {

const char* kSpace = "\xe2\x96\x81";  // U+2581: SentencePiece's visible space
constexpr float kUnkPenalty = 10.0f;  // SentencePiece's: unknown characters score min_score - 10

// sentencepiece_model.proto, the fields lmforge reads.
enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
enum ModelType { kUnigram = 1, kBpe = 2 };

// Protobuf wire format: (field << 3 | wire type) keys, varints, fixed32, length-delimited bytes.
class WireReader {
 public:
  WireReader(std::string_view data, const std::string& path) : data_(data), path_(path) {}
  bool done() const { return pos_ >= data_.size(); }
  // Next field: its number and wire type; the value is read with one of the calls below.
  std::pair<uint32_t, int> key() {
    uint64_t k = varint();
    return {static_cast<uint32_t>(k >> 3), static_cast<int>(k & 7)};
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) fail("truncated varint");
      auto byte = static_cast<unsigned char>(data_[pos_++]);
      v |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }
  float fixed32_float() {
    if (pos_ + 4 > data_.size()) fail("truncated fixed32");
    uint32_t bits = 0;
    for (int i = 3; i >= 0; --i) bits = bits << 8 | static_cast<unsigned char>(data_[pos_ + i]);
    pos_ += 4;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (n > data_.size() - pos_) fail("length-delimited field runs past the end");
    std::string_view v = data_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  void skip(int wire_type) {
    if (wire_type == 0) varint();
    else if (wire_type == 1) advance(8);
    else if (wire_type == 2) bytes();
    else if (wire_type == 5) advance(4);
    else fail("unknown wire type " + std::to_string(wire_type));
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(path_ + ": not a SentencePiece model (" + what + " at byte " + std::to_string(pos_) + ")");
  }

 private:
  void advance(size_t n) {
    if (n > data_.size() - pos_) fail("truncated field");
    pos_ += n;
  }
  std::string_view data_;
  const std::string& path_;
  size_t pos_ = 0;
};

size_t utf8_length(const std::string_view s, size_t i) {  // of the character at i; 0 if invalid
  auto c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  return len;
}

// The precompiled charsmap: a Darts-clone double-array trie of source strings whose values are
// offsets of NUL-terminated replacements. Blob: uint32 trie size | trie units | replacements.
class CharsMap {
 public:
  CharsMap() = default;
  CharsMap(std::string_view blob, const WireReader& r) {
    if (blob.empty()) return;
    if (blob.size() < 4) r.fail("charsmap shorter than its header");
    uint32_t trie_size = 0;
    for (int i = 3; i >= 0; --i) trie_size = trie_size << 8 | static_cast<unsigned char>(blob[i]);
    if (trie_size % 4 != 0 || trie_size > blob.size() - 4) r.fail("charsmap trie size out of range");
    units_.resize(trie_size / 4);
    for (size_t u = 0; u < units_.size(); ++u)
      for (int i = 3; i >= 0; --i) units_[u] = units_[u] << 8 | static_cast<unsigned char>(blob[4 + u * 4 + i]);
    replacements_.assign(blob.substr(4 + trie_size));
    replacements_.push_back('\0');  // every replacement ends inside the string
  }
  // The longest rule matching a prefix of s: (bytes consumed, replacement); consumed 0 if none.
  std::pair<size_t, std::string_view> longest_match(std::string_view s) const {
    std::pair<size_t, std::string_view> best{0, {}};
    if (units_.empty()) return best;
    uint32_t node = offset(units_[0]);
    for (size_t i = 0; i < s.size(); ++i) {
      node ^= static_cast<unsigned char>(s[i]);
      if (node >= units_.size()) break;
      uint32_t unit = units_[node];
      if ((unit & ((1u << 31) | 0xFF)) != static_cast<unsigned char>(s[i])) break;  // label mismatch
      node ^= offset(unit);
      if (((unit >> 8) & 1) && node < units_.size()) {  // has a leaf: a rule ends here
        uint32_t value = units_[node] & 0x7FFFFFFF;
        if (value < replacements_.size()) best = {i + 1, std::string_view(replacements_.c_str() + value)};
      }
    }
    return best;
  }

 private:
  static uint32_t offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }
  std::vector<uint32_t> units_;
  std::string replacements_;
};

struct Piece {
  std::string text;
  float score = 0;
  int type = kNormal;
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const SpecialTokens& special) : path_(path) {
    read_model(read_file(path, path + ": cannot read"));
    apply_special(special);
    fingerprint_ = "sp-" + sha256_file(path).substr(0, 16) + special_suffix_;
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<std::pair<size_t, size_t>> whole;  // [begin, end) of tokens kept whole, in `normalized`
    std::string normalized = normalize(text, whole);
    std::vector<int32_t> ids;
    size_t start = 0;
    for (const auto& [b, e] : whole) {
      encode_segment(std::string_view(normalized).substr(start, b - start), ids);
      ids.push_back(index_.at(normalized.substr(b, e - b)).first);
      start = e;
    }
    encode_segment(std::string_view(normalized).substr(start), ids);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) continue;
      const Piece& p = pieces_[id];
      if (p.type == kControl || p.type == kUnused) continue;
      if (p.type == kUnknown) {
        out += " \xe2\x81\x87 ";  // SentencePiece's default unk surface, U+2047
      } else if (p.type == kByte) {
        out += static_cast<char>(std::stoi(p.text.substr(3, 2), nullptr, 16));
      } else if (p.type == kUserDefined) {
        out += p.text;
      } else {
        for (size_t i = 0; i < p.text.size();) {
          bool space = p.text.compare(i, 3, kSpace) == 0;
          out += space ? std::string(" ") : p.text.substr(i, 1);
          i += space ? 3 : 1;
        }
      }
    }
    if (add_dummy_prefix_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  std::string piece(int32_t id) const override {
    return id >= 0 && id < static_cast<int32_t>(pieces_.size()) ? pieces_[id].text : "";
  }
  std::string fingerprint() const override { return fingerprint_; }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw InputError(path_ + ": " + what); }

  void read_model(const std::string& data) {
    WireReader model(data, path_);
    std::string_view charsmap;
    while (!model.done()) {
      auto [field, wire] = model.key();
      if (field == 1 && wire == 2) {
        pieces_.push_back(read_piece(WireReader(model.bytes(), path_)));
      } else if (field == 2 && wire == 2) {
        read_trainer_spec(WireReader(model.bytes(), path_));
      } else if (field == 3 && wire == 2) {
        WireReader n(model.bytes(), path_);
        while (!n.done()) {
          auto [f, w] = n.key();
          if (f == 2 && w == 2) charsmap = n.bytes();
          else if (f == 3 && w == 0) add_dummy_prefix_ = n.varint() != 0;
          else if (f == 4 && w == 0) remove_extra_whitespaces_ = n.varint() != 0;
          else if (f == 5 && w == 0) escape_whitespaces_ = n.varint() != 0;
          else n.skip(w);
        }
        charsmap_ = CharsMap(charsmap, n);
      } else {
        model.skip(wire);
      }
    }
    if (pieces_.empty()) model.fail("no pieces");
    if (model_type_ != kUnigram && model_type_ != kBpe)
      fail("model type " + std::to_string(model_type_) + " (WORD or CHAR) is not supported; Unigram and BPE are");
    if (whitespace_as_suffix_) fail("treat_whitespace_as_suffix models are not supported");
    min_score_ = std::numeric_limits<float>::max();
    for (size_t id = 0; id < pieces_.size(); ++id) {
      const Piece& p = pieces_[id];
      if (p.type == kNormal) min_score_ = std::min(min_score_, p.score);
      if (p.type == kNormal || p.type == kUserDefined) index(p.text, static_cast<int32_t>(id));
      if (p.type == kUserDefined) whole_.push_back(p.text);
      if (p.type == kByte) byte_ids_[std::stoi(p.text.substr(3, 2), nullptr, 16) & 0xFF] = static_cast<int32_t>(id);
    }
    for (int32_t* id : {&unk_, &bos_, &eos_, &pad_})
      if (*id >= static_cast<int32_t>(pieces_.size())) *id = -1;
    if (unk_ < 0) fail("the model has no unknown piece");
  }

  Piece read_piece(WireReader r) {
    Piece p;
    while (!r.done()) {
      auto [f, w] = r.key();
      if (f == 1 && w == 2) p.text = std::string(r.bytes());
      else if (f == 2 && w == 5) p.score = r.fixed32_float();
      else if (f == 3 && w == 0) p.type = static_cast<int>(r.varint());
      else r.skip(w);
    }
    if (p.type == kByte && (p.text.size() != 6 || p.text.compare(0, 3, "<0x") != 0)) r.fail("byte piece '" + p.text + "'");
    return p;
  }

  void read_trainer_spec(WireReader r) {
    while (!r.done()) {
      auto [f, w] = r.key();
      if (w != 0) {
        r.skip(w);
        continue;
      }
      auto v = static_cast<int64_t>(r.varint());  // int32 fields: negative values are 10-byte varints
      if (f == 3) model_type_ = static_cast<int>(v);
      else if (f == 24) whitespace_as_suffix_ = v != 0;
      else if (f == 35) byte_fallback_ = v != 0;
      else if (f == 40) unk_ = static_cast<int32_t>(v);
      else if (f == 41) bos_ = static_cast<int32_t>(v);
      else if (f == 42) eos_ = static_cast<int32_t>(v);
      else if (f == 43) pad_ = static_cast<int32_t>(v);
    }
  }

  void index(const std::string& text, int32_t id) {
    auto& slot = index_[text];
    slot = {id, pieces_[id].score};
    max_piece_bytes_ = std::max(max_piece_bytes_, text.size());
  }

  // bos/eos/pad by piece text (appended when missing); extra tokens are matched whole in text.
  void apply_special(const SpecialTokens& special) {
    auto id_of = [&](const std::string& text) {
      for (size_t id = 0; id < pieces_.size(); ++id)
        if (pieces_[id].text == text) return static_cast<int32_t>(id);
      pieces_.push_back({text, 0.0f, kUserDefined});
      return static_cast<int32_t>(pieces_.size() - 1);
    };
    using Slot = std::pair<const std::string*, int32_t*>;
    for (auto [text, target] : {Slot{&special.bos, &bos_}, Slot{&special.eos, &eos_}, Slot{&special.pad, &pad_}})
      if (!text->empty()) *target = id_of(*text);
    for (const auto& text : special.extra) {
      int32_t id = id_of(text);
      pieces_[id].type = kUserDefined;
      index(text, id);
      whole_.push_back(text);
    }
    std::string named = special.bos + '\n' + special.eos + '\n' + special.pad + '\n';
    for (const auto& t : special.extra) named += t + '\n';
    if (!special.empty()) special_suffix_ = "-" + sha256_hex(named).substr(0, 8);
    std::sort(whole_.begin(), whole_.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  }

  // One normalization step at the start of s: (replacement, bytes consumed). Tokens kept whole
  // pass unchanged; invalid UTF-8 becomes U+FFFD, one byte at a time.
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view s, bool& is_whole) const {
    is_whole = false;
    for (const auto& w : whole_)
      if (s.substr(0, w.size()) == w) {
        is_whole = true;
        return {s.substr(0, w.size()), w.size()};
      }
    auto [consumed, replacement] = charsmap_.longest_match(s);
    if (consumed > 0) return {replacement, consumed};
    size_t len = utf8_length(s, 0);
    if (len == 0) return {"\xef\xbf\xbd", 1};
    return {s.substr(0, len), len};
  }

  // SentencePiece's Normalizer::Normalize; `whole` receives the spans of tokens kept whole.
  std::string normalize(std::string_view input, std::vector<std::pair<size_t, size_t>>& whole) const {
    std::string out;
    bool is_whole = false;
    if (remove_extra_whitespaces_) {
      while (!input.empty()) {
        auto [sp, consumed] = normalize_prefix(input, is_whole);
        if (sp != " ") break;
        input.remove_prefix(consumed);
      }
    }
    if (input.empty()) return out;
    const std::string space = escape_whitespaces_ ? kSpace : " ";
    if (add_dummy_prefix_) out += space;
    bool prev_space = remove_extra_whitespaces_;
    while (!input.empty()) {
      auto [sp, consumed] = normalize_prefix(input, is_whole);
      if (is_whole) {
        whole.emplace_back(out.size(), out.size() + sp.size());
        out += sp;
        prev_space = false;
      } else {
        if (prev_space)
          while (!sp.empty() && sp[0] == ' ') sp.remove_prefix(1);
        if (!sp.empty()) {
          for (char c : sp) out += (escape_whitespaces_ && c == ' ') ? space : std::string(1, c);
          prev_space = sp.back() == ' ';
        }
        prev_space = prev_space && remove_extra_whitespaces_;
      }
      input.remove_prefix(consumed);
    }
    if (remove_extra_whitespaces_)
      while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0 &&
             (whole.empty() || whole.back().second <= out.size() - space.size()))
        out.resize(out.size() - space.size());
    return out;
  }

  void encode_segment(std::string_view s, std::vector<int32_t>& ids) const {
    if (s.empty()) return;
    std::vector<std::pair<std::string_view, int32_t>> pieces = model_type_ == kBpe ? bpe(s) : viterbi(s);
    for (const auto& [text, id] : pieces) {
      if (id != unk_) {
        ids.push_back(id);
      } else if (byte_fallback_) {
        for (unsigned char c : text) {
          if (byte_ids_[c] < 0) fail("byte fallback needs piece <0x..> for byte " + std::to_string(c));
          ids.push_back(byte_ids_[c]);
        }
      } else if (ids.empty() || ids.back() != unk_) {  // SentencePiece merges runs of unknowns
        ids.push_back(unk_);
      }
    }
  }

  // Unigram: the segmentation with the highest total piece score, a character no piece starts with
  // being one unknown node. Near-ties are decided by rounding, so the arithmetic is SentencePiece's
  // (unigram_model.cc EncodeOptimized): float path scores, a piece's candidate summed in double.
  std::vector<std::pair<std::string_view, int32_t>> viterbi(std::string_view s) const {
    const float lowest = -std::numeric_limits<float>::infinity();
    std::vector<float> best(s.size() + 1, lowest);
    std::vector<std::pair<size_t, int32_t>> back(s.size() + 1, {0, -1});  // [end] -> (begin, id)
    best[0] = 0;
    for (size_t i = 0; i < s.size();) {
      size_t char_len = utf8_length(s, i);
      if (char_len == 0) char_len = 1;
      if (best[i] != lowest) {
        bool single = false;
        for (size_t len = char_len; len <= max_piece_bytes_ && i + len <= s.size(); ++len) {
          auto it = index_.find(std::string(s.substr(i, len)));
          if (it == index_.end()) continue;
          single |= len == char_len;
          double score = static_cast<double>(it->second.second) + best[i];
          if (score > best[i + len]) {
            best[i + len] = static_cast<float>(score);
            back[i + len] = {i, it->second.first};
          }
        }
        if (!single && best[i] + min_score_ - kUnkPenalty > best[i + char_len]) {
          best[i + char_len] = best[i] + min_score_ - kUnkPenalty;
          back[i + char_len] = {i, unk_};
        }
      }
      i += char_len;
    }
    std::vector<std::pair<std::string_view, int32_t>> out;
    for (size_t end = s.size(); end > 0; end = back[end].first) out.emplace_back(s.substr(back[end].first, end - back[end].first), back[end].second);
    std::reverse(out.begin(), out.end());
    return out;
  }

  // BPE: characters, then repeatedly the adjacent pair whose concatenation is the highest-scoring
  // piece (leftmost on ties) is merged, as SentencePiece's bpe_model does.
  std::vector<std::pair<std::string_view, int32_t>> bpe(std::string_view s) const {
    struct Symbol {
      size_t begin, len;
      int prev, next;
    };
    std::vector<Symbol> sym;
    for (size_t i = 0; i < s.size();) {
      size_t len = std::max<size_t>(utf8_length(s, i), 1);
      sym.push_back({i, len, static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1});
      i += len;
    }
    sym.back().next = -1;
    struct Pair {
      float score;
      int left, right;
      size_t len;  // of the merged text, to spot pairs whose symbols changed since
      bool operator<(const Pair& o) const { return score != o.score ? score < o.score : left > o.left; }
    };
    std::priority_queue<Pair> agenda;
    auto consider = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      auto it = index_.find(std::string(s.substr(sym[l].begin, sym[l].len + sym[r].len)));
      if (it != index_.end()) agenda.push({it->second.second, l, r, sym[l].len + sym[r].len});
    };
    for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) consider(i, i + 1);
    while (!agenda.empty()) {
      Pair top = agenda.top();
      agenda.pop();
      Symbol &l = sym[top.left], &r = sym[top.right];
      if (l.len == 0 || r.len == 0 || l.len + r.len != top.len || l.next != top.right) continue;  // stale
      l.len += r.len;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = top.left;
      r.len = 0;
      consider(l.prev, top.left);
      consider(top.left, l.next);
    }
    std::vector<std::pair<std::string_view, int32_t>> out;
    for (int i = 0; i >= 0; i = sym[i].next) {
      auto text = s.substr(sym[i].begin, sym[i].len);
      auto it = index_.find(std::string(text));
      out.emplace_back(text, it == index_.end() ? unk_ : it->second.first);
    }
    return out;
  }

  std::string path_, fingerprint_, special_suffix_;
  std::vector<Piece> pieces_;
  std::unordered_map<std::string, std::pair<int32_t, float>> index_;  // normal + user pieces -> (id, score)
  std::vector<std::string> whole_;  // user-defined pieces and extra special tokens, longest first
  std::array<int32_t, 256> byte_ids_ = filled(-1);
  CharsMap charsmap_;
  size_t max_piece_bytes_ = 1;
  float min_score_ = 0;
  int model_type_ = kUnigram;  // the proto's default
  bool whitespace_as_suffix_ = false, byte_fallback_ = false;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true;  // proto defaults
  int32_t unk_ = 0, bos_ = 1, eos_ = 2, pad_ = -1;  // the proto's defaults

  static std::array<int32_t, 256> filled(int32_t v) {
    std::array<int32_t, 256> a;
    a.fill(v);
    return a;
  }
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path, const SpecialTokens& special) {
  return std::make_unique<SentencePieceTokenizer>(path, special);
}

}  // namespace lmforge::data
