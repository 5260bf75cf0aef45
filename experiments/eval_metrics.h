// experiments/eval_metrics.h -- task metrics over predictions and references: exact match, token
// F1, corpus BLEU (sacreBLEU 13a), ROUGE-L, perplexity, bits per byte, multiple-choice accuracy.
// Pure functions on strings and numbers; running a model to get them is eval_suite.cpp's business.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lmforge::experiments {

// SQuAD's answer normalisation, each step switchable (all on by default, as SQuAD does it).
struct NormalizeOptions {
  bool lowercase = true;
  bool strip_punctuation = true;  // ASCII punctuation (Python's string.punctuation)
  bool strip_articles = true;     // the words a, an, the
  bool strip_whitespace = true;   // runs of whitespace become one space; ends trimmed
};
std::string normalize_answer(const std::string& text, const NormalizeOptions& o);

// Fraction (0..1) of predictions equal to their reference after normalisation.
double exact_match(const std::vector<std::string>& predictions, const std::vector<std::string>& references,
                   const NormalizeOptions& o = {});

// Mean over examples (0..1) of SQuAD's token-level F1 on normalised, whitespace-split tokens.
double token_f1(const std::vector<std::string>& predictions, const std::vector<std::string>& references,
                const NormalizeOptions& o = {});

// sacreBLEU's 13a tokenisation (mteval-v13a): the tokens joined by single spaces.
std::string tokenize_13a(const std::string& text);

struct BleuScore {
  double score = 0;                 // 0..100, as sacreBLEU prints it
  std::vector<double> precisions;   // [n-1] modified n-gram precision, 0..100 (after smoothing)
  double brevity_penalty = 0;
  int64_t sys_len = 0, ref_len = 0;  // tokens in the hypotheses; closest reference lengths summed
};
// Corpus BLEU as sacreBLEU's corpus_bleu with its defaults: 13a tokens, case-sensitive, n = 1..4,
// 'exp' smoothing. references[i] holds one or more references of predictions[i].
BleuScore corpus_bleu(const std::vector<std::string>& predictions,
                      const std::vector<std::vector<std::string>>& references);

// Mean over examples (0..1) of ROUGE-L F-measure (LCS of tokens), tokenised as Google's
// rouge_score does without stemming: lowercase, runs of characters outside [a-z0-9] split tokens.
double rouge_l(const std::vector<std::string>& predictions, const std::vector<std::string>& references);

// exp(nll / tokens) for a summed negative log-likelihood in nats.
double perplexity(double nll_sum, int64_t tokens);
// The same likelihood per UTF-8 byte of the text, in bits: nll / (ln 2 * bytes). Comparable
// across tokenizers, unlike perplexity.
double bits_per_byte(double nll_sum, int64_t bytes);

// Fraction (0..1) of examples whose gold choice has the highest log-likelihood;
// choice_logprobs[i][c] = log p(choice c | prompt i). A tie goes to the first choice.
double multiple_choice_accuracy(const std::vector<std::vector<double>>& choice_logprobs,
                                const std::vector<int64_t>& gold);

}  // namespace lmforge::experiments
