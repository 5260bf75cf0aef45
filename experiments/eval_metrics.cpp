// experiments/eval_metrics.cpp -- the metric formulas of eval_metrics.h. Each one follows the
// reference implementation its header names, down to tokenisation and tie-breaking.
#include "experiments/eval_metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <regex>
#include <stdexcept>

namespace lmforge::experiments {

namespace {

bool is_space(unsigned char c) { return std::isspace(c) || (c >= 0x1c && c <= 0x1f); }  // Python's str.split()

std::vector<std::string> split_whitespace(const std::string& text) {
  std::vector<std::string> tokens;
  std::string current;
  for (unsigned char c : text) {
    if (is_space(c)) {
      if (!current.empty()) tokens.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(static_cast<char>(c));
    }
  }
  if (!current.empty()) tokens.push_back(std::move(current));
  return tokens;
}

std::string join(const std::vector<std::string>& tokens) {
  std::string out;
  for (const auto& t : tokens) out += (out.empty() ? "" : " ") + t;
  return out;
}

// Python's \w for our purposes: ASCII alphanumerics, '_' and any byte of a multi-byte character.
bool is_word_byte(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }

// SQuAD: re.sub(r'\b(a|an|the)\b', ' ', text).
std::string remove_articles(const std::string& text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (!is_word_byte(static_cast<unsigned char>(text[i]))) {
      out.push_back(text[i++]);
      continue;
    }
    size_t end = i;
    while (end < text.size() && is_word_byte(static_cast<unsigned char>(text[end]))) ++end;
    std::string word = text.substr(i, end - i);
    out += (word == "a" || word == "an" || word == "the") ? " " : word;
    i = end;
  }
  return out;
}

void check_sizes(size_t predictions, size_t references) {
  if (predictions != references)
    throw std::invalid_argument(std::to_string(predictions) + " predictions for " + std::to_string(references) +
                                " references");
}

using Ngrams = std::map<std::vector<std::string>, int64_t>;

Ngrams count_ngrams(const std::vector<std::string>& tokens, size_t n) {
  Ngrams counts;
  for (size_t i = 0; i + n <= tokens.size(); ++i) ++counts[std::vector<std::string>(tokens.begin() + i, tokens.begin() + i + n)];
  return counts;
}

// rouge_score's tokenizer without stemming.
std::vector<std::string> rouge_tokens(const std::string& text) {
  std::string cleaned;
  for (unsigned char c : text) {
    unsigned char lower = static_cast<unsigned char>(std::tolower(c));
    bool keep = (lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9');
    cleaned.push_back(keep ? static_cast<char>(lower) : ' ');
  }
  return split_whitespace(cleaned);
}

size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<size_t> previous(b.size() + 1, 0), current(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      current[j] = a[i - 1] == b[j - 1] ? previous[j - 1] + 1 : std::max(previous[j], current[j - 1]);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

}  // namespace

std::string normalize_answer(const std::string& text, const NormalizeOptions& o) {
  std::string s = text;
  if (o.lowercase)
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (o.strip_punctuation)
    s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return std::ispunct(static_cast<unsigned char>(c)); }),
            s.end());
  if (o.strip_articles) s = remove_articles(s);
  if (o.strip_whitespace) s = join(split_whitespace(s));
  return s;
}

double exact_match(const std::vector<std::string>& predictions, const std::vector<std::string>& references,
                   const NormalizeOptions& o) {
  check_sizes(predictions.size(), references.size());
  if (predictions.empty()) return 0.0;
  size_t hits = 0;
  for (size_t i = 0; i < predictions.size(); ++i)
    hits += normalize_answer(predictions[i], o) == normalize_answer(references[i], o);
  return static_cast<double>(hits) / static_cast<double>(predictions.size());
}

double token_f1(const std::vector<std::string>& predictions, const std::vector<std::string>& references,
                const NormalizeOptions& o) {
  check_sizes(predictions.size(), references.size());
  if (predictions.empty()) return 0.0;
  double total = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    auto pred = split_whitespace(normalize_answer(predictions[i], o));
    auto gold = split_whitespace(normalize_answer(references[i], o));
    if (pred.empty() || gold.empty()) {  // SQuAD v2: F1 is 1 when both are empty, else 0
      total += pred.empty() && gold.empty();
      continue;
    }
    std::map<std::string, int64_t> gold_counts;
    for (const auto& t : gold) ++gold_counts[t];
    int64_t common = 0;
    for (const auto& t : pred)
      if (gold_counts[t] > 0) --gold_counts[t], ++common;
    if (common == 0) continue;
    double precision = static_cast<double>(common) / static_cast<double>(pred.size());
    double recall = static_cast<double>(common) / static_cast<double>(gold.size());
    total += 2 * precision * recall / (precision + recall);
  }
  return total / static_cast<double>(predictions.size());
}

std::string tokenize_13a(const std::string& text) {
  // The regular expressions of sacreBLEU's TokenizerRegexp, in order; applied to " line ".
  static const std::vector<std::pair<std::regex, std::string>> rules = {
      {std::regex(R"re(([\x7B-\x7E\x5B-\x60\x20-\x26\x28-\x2B\x3A-\x40\x2F]))re"), " $1 "},  // symbols
      {std::regex(R"re(([^0-9])([\.,]))re"), "$1 $2 "},  // period and comma unless preceded by a digit
      {std::regex(R"re(([\.,])([^0-9]))re"), " $1 $2"},  // period and comma unless followed by a digit
      {std::regex(R"re(([0-9])(-))re"), "$1 $2 "},       // dash after a digit
  };
  std::string line = text;
  auto replace_all = [&line](const std::string& from, const std::string& to) {
    for (size_t at = line.find(from); at != std::string::npos; at = line.find(from, at + to.size()))
      line.replace(at, from.size(), to);
  };
  replace_all("<skipped>", "");
  replace_all("-\n", "");
  replace_all("\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all("&quot;", "\"");
    replace_all("&amp;", "&");
    replace_all("&lt;", "<");
    replace_all("&gt;", ">");
  }
  line = " " + line + " ";
  for (const auto& [re, replacement] : rules) line = std::regex_replace(line, re, replacement);
  return join(split_whitespace(line));
}

BleuScore corpus_bleu(const std::vector<std::string>& predictions,
                      const std::vector<std::vector<std::string>>& references) {
  constexpr size_t kOrder = 4;  // BLEU-4, sacreBLEU's default
  check_sizes(predictions.size(), references.size());
  std::vector<int64_t> correct(kOrder, 0), total(kOrder, 0);
  BleuScore b;
  for (size_t i = 0; i < predictions.size(); ++i) {
    // sacreBLEU strips trailing whitespace before tokenising (the tokeniser trims it anyway).
    auto hyp = split_whitespace(tokenize_13a(predictions[i]));
    std::vector<std::vector<std::string>> refs;
    for (const auto& r : references[i]) refs.push_back(split_whitespace(tokenize_13a(r)));
    if (refs.empty()) throw std::invalid_argument("example " + std::to_string(i) + " has no reference");
    // The closest reference length; a tie goes to the shorter reference.
    int64_t hyp_len = static_cast<int64_t>(hyp.size()), closest = -1;
    for (const auto& r : refs) {
      int64_t len = static_cast<int64_t>(r.size());
      if (closest < 0 || std::abs(hyp_len - len) < std::abs(hyp_len - closest) ||
          (std::abs(hyp_len - len) == std::abs(hyp_len - closest) && len < closest))
        closest = len;
    }
    b.sys_len += hyp_len;
    b.ref_len += closest;
    for (size_t n = 1; n <= kOrder; ++n) {
      Ngrams max_ref;
      for (const auto& r : refs)
        for (const auto& [gram, count] : count_ngrams(r, n)) max_ref[gram] = std::max(max_ref[gram], count);
      for (const auto& [gram, count] : count_ngrams(hyp, n)) {
        auto it = max_ref.find(gram);
        correct[n - 1] += std::min(count, it == max_ref.end() ? 0 : it->second);
        total[n - 1] += count;
      }
    }
  }
  b.precisions.assign(kOrder, 0.0);
  double smooth = 1.0;
  for (size_t n = 0; n < kOrder; ++n) {
    if (total[n] == 0) break;
    if (correct[n] == 0) {
      smooth *= 2;  // 'exp': each further zero count halves the pseudo-precision
      b.precisions[n] = 100.0 / (smooth * static_cast<double>(total[n]));
    } else {
      b.precisions[n] = 100.0 * static_cast<double>(correct[n]) / static_cast<double>(total[n]);
    }
  }
  b.brevity_penalty = b.sys_len >= b.ref_len ? 1.0
                      : b.sys_len > 0      ? std::exp(1.0 - static_cast<double>(b.ref_len) / static_cast<double>(b.sys_len))
                                           : 0.0;
  if (std::all_of(correct.begin(), correct.end(), [](int64_t c) { return c == 0; })) return b;  // sacreBLEU #141
  double log_sum = 0;
  for (double p : b.precisions) log_sum += p > 0 ? std::log(p) : -9999999999.0;  // sacreBLEU's my_log
  b.score = b.brevity_penalty * std::exp(log_sum / static_cast<double>(kOrder));
  return b;
}

double rouge_l(const std::vector<std::string>& predictions, const std::vector<std::string>& references) {
  check_sizes(predictions.size(), references.size());
  if (predictions.empty()) return 0.0;
  double total = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    auto pred = rouge_tokens(predictions[i]), ref = rouge_tokens(references[i]);
    if (pred.empty() || ref.empty()) continue;
    double lcs = static_cast<double>(lcs_length(ref, pred));
    if (lcs == 0) continue;
    double precision = lcs / static_cast<double>(pred.size()), recall = lcs / static_cast<double>(ref.size());
    total += 2 * precision * recall / (precision + recall);
  }
  return total / static_cast<double>(predictions.size());
}

double perplexity(double nll_sum, int64_t tokens) { return std::exp(nll_sum / static_cast<double>(tokens)); }

double bits_per_byte(double nll_sum, int64_t bytes) { return nll_sum / (std::log(2.0) * static_cast<double>(bytes)); }

double multiple_choice_accuracy(const std::vector<std::vector<double>>& choice_logprobs,
                                const std::vector<int64_t>& gold) {
  check_sizes(choice_logprobs.size(), gold.size());
  if (gold.empty()) return 0.0;
  size_t hits = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    const auto& lp = choice_logprobs[i];
    int64_t best = std::max_element(lp.begin(), lp.end()) - lp.begin();  // the first of equal maxima
    hits += !lp.empty() && best == gold[i];
  }
  return static_cast<double>(hits) / static_cast<double>(gold.size());
}

}  // namespace lmforge::experiments
