// data/chat_masks.cpp -- assistant turns in a chat template's rendering: {% generation %} spans, the prefix
// method, and located spans. Not here: the Jinja2 interpreter (data/jinja/), tokenizing the segments.
#include "data/chat_masks.h"

#include <optional>
#include <utility>

#include "core/errors.h"
#include "data/chat_template.h"

namespace lmforge::data {

using ojson = nlohmann::ordered_json;
using Spans = std::vector<std::pair<size_t, size_t>>;  // [begin, end) byte ranges of the whole rendering

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string quoted(const std::string& s, size_t at, size_t n = 24) { return nlohmann::json(s.substr(at, n)).dump(); }

struct Conversation {
  const ChatTemplate& t;
  const ojson& messages;
  const ojson& tools;
  const std::string& where;

  std::string render(size_t n, bool generation_prompt) const {
    ojson head(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(n));
    return render_chat(t, head, generation_prompt, where, tools);
  }
  bool assistant(size_t i) const { return messages[i]["role"] == "assistant"; }
  std::string turn(size_t i) const { return where + ": messages[" + std::to_string(i) + "] (assistant)"; }
};

// Method 2. nullopt where a rendering is not a prefix of the whole one.
std::optional<Spans> prefix_spans(const Conversation& c, const std::string& whole) {
  Spans spans;
  size_t done = 0;
  for (size_t i = 0; i < c.messages.size(); ++i) {
    if (!c.assistant(i)) continue;
    std::string before = c.render(i, true), upto = c.render(i + 1, false);
    if (!starts_with(whole, before) || !starts_with(whole, upto) || before.size() < done || upto.size() < before.size())
      return std::nullopt;
    spans.emplace_back(before.size(), upto.size());
    done = upto.size();
  }
  return spans;
}

// The text the generation prompt adds after messages[:i] (the header of an assistant turn); empty when
// the template writes none or messages[:i] does not render (some templates refuse a conversation
// without a user message). A crossed bound is not swallowed.
std::string header(const Conversation& c, size_t i) {
  try {
    std::string without = c.render(i, false), with = c.render(i, true);
    return starts_with(with, without) ? with.substr(without.size()) : "";
  } catch (const TemplateBudgetError&) {
    throw;
  } catch (const InputError&) {
    return "";
  }
}

// The first special token at or after `from`: {begin, end}, or {npos, npos}.
std::pair<size_t, size_t> next_special(const ChatTemplate& t, const std::string& text, size_t from) {
  std::pair<size_t, size_t> best{std::string::npos, std::string::npos};
  for (const std::string& s : t.special_texts) {
    size_t k = text.find(s, from);
    if (k != std::string::npos && (k < best.first || (k == best.first && k + s.size() > best.second)))
      best = {k, k + s.size()};
  }
  return best;
}

// Method 3.
Spans located_spans(const Conversation& c, const std::string& whole) {
  Spans spans;
  size_t cursor = 0;
  for (size_t i = 0; i < c.messages.size(); ++i) {
    if (!c.assistant(i)) continue;
    const ojson& m = c.messages[i];
    std::string content = m.contains("content") && m["content"].is_string() ? strip(m["content"].get<std::string>()) : "";
    std::string head = header(c, i), prompt = head;
    size_t begin = cursor;
    // Some templates' generation prompt ends with more whitespace than their turns' headers (a ChatML
    // variant writes "assistant\n\n" but "assistant\ncontent"): then the header without it marks the turn,
    // and the trained text starts at the content, the whitespace between being neither's for sure.
    bool trimmed = false;
    if (!head.empty() && whole.find(head, cursor) == std::string::npos) {
      while (!head.empty() && is_space(head.back())) head.pop_back();
      trimmed = true;
    }
    if (!head.empty()) {
      size_t k = whole.find(head, cursor);
      if (k == std::string::npos)
        throw InputError(c.turn(i) + ": the chat template (" + c.t.source() + ") does not write its header (the generation prompt " +
                         nlohmann::json(prompt).dump() + ") after the previous assistant turn, so the turn cannot be marked for the loss");
      begin = k + head.size();
    }
    size_t at = content.empty() ? begin : whole.find(content, begin);
    size_t next_turn = head.empty() ? std::string::npos : whole.find(head, begin);
    if (at == std::string::npos || (next_turn != std::string::npos && at > next_turn))
      throw InputError(c.turn(i) + ": its content (" + quoted(content, 0) + "...) is not in the chat template's (" + c.t.source() +
                       ") rendering of its turn, so the turn cannot be marked for the loss");
    if (head.empty() || trimmed) begin = at;
    size_t end = at + content.size();
    auto eot = next_special(c.t, whole, end);
    if (eot.first != std::string::npos && (next_turn == std::string::npos || eot.first < next_turn)) end = eot.second;
    if (whole.compare(end, 2, "\r\n") == 0) end += 2;
    else if (end < whole.size() && whole[end] == '\n') ++end;
    spans.emplace_back(begin, end);
    cursor = end;
  }
  return spans;
}

// Method 1: the blocks' ranges, overlapping or adjacent ones merged.
Spans generation_spans(const Conversation& c, const ChatRendering& r) {
  Spans spans;
  for (auto [b, e] : r.generation) {
    if (b == e) continue;
    if (!spans.empty() && b <= spans.back().second) spans.back().second = std::max(spans.back().second, e);
    else spans.emplace_back(b, e);
  }
  for (size_t i = 0; i < c.messages.size() && spans.empty(); ++i)
    if (c.assistant(i))
      throw InputError(c.turn(i) + ": the chat template (" + c.t.source() +
                       ") has {% generation %} blocks but marks none of this record's text, so no turn can be trained");
  return spans;
}

}  // namespace

std::vector<Segment> chat_segments(const ChatTemplate& t, const ojson& messages, const ojson& tools, const std::string& where) {
  Conversation c{t, messages, tools, where};
  ChatRendering whole = render_chat_spans(t, messages, false, where, tools);
  Spans spans;
  if (t.has_generation()) {
    spans = generation_spans(c, whole);
  } else if (auto prefix = prefix_spans(c, whole.text)) {
    spans = *prefix;
  } else {
    spans = located_spans(c, whole.text);
  }
  std::vector<Segment> out;
  size_t done = 0;
  for (auto [b, e] : spans) {
    if (b > done) out.push_back({whole.text.substr(done, b - done), false});
    out.push_back({whole.text.substr(b, e - b), true});
    done = e;
  }
  if (done < whole.text.size()) out.push_back({whole.text.substr(done), false});
  return out;
}

}  // namespace lmforge::data
