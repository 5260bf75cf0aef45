// trainer/generate.cpp -- scoring, the sampling filters, the generation loop over the KV cache,
// and opening HF or run directories for inference. No CLI parsing and no printing here.
#include "trainer/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <limits>

#include "core/errors.h"
#include "trainer/models/family.h"

namespace lmforge::trainer {

namespace fs = std::filesystem;

namespace {

torch::Tensor as_batch(const std::vector<int64_t>& ids, const torch::Device& device) {  // -> (1, T)
  return torch::tensor(ids, torch::kLong).view({1, static_cast<int64_t>(ids.size())}).to(device);
}

}  // namespace

void check_sequence_length(const ModelConfig& cfg, int64_t positions, const std::string& what) {
  if (family_of_arch(cfg.arch).learned_positions && positions > cfg.max_seq_len)
    throw InputError(what + " needs " + std::to_string(positions) + " positions; the model has " +
                     std::to_string(cfg.max_seq_len) + " learned positions");
}

namespace {

void check_ids(const std::vector<int64_t>& ids, int64_t vocab, const std::string& what) {
  for (int64_t id : ids)
    if (id < 0 || id >= vocab)
      throw InputError(what + ": token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                       std::to_string(vocab) + ")");
}

int64_t vocab_of(CausalLMImpl& model) {
  int64_t rows = embedding_rows(model);
  return rows >= 0 ? rows : std::numeric_limits<int64_t>::max();
}

}  // namespace

int64_t sample_next(const torch::Tensor& logits, const SamplingConfig& s, at::Generator& gen) {
  auto x = logits.to(torch::kFloat).flatten();  // (V)
  if (s.temperature <= 0) return x.argmax().item<int64_t>();
  x = x / s.temperature;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (s.top_k > 0 && s.top_k < x.size(0)) {
    auto kth = std::get<0>(x.topk(s.top_k)).min();
    x = x.masked_fill(x < kth, neg_inf);
  }
  if (s.top_p < 1.0) {  // keep the smallest prefix of the sorted tokens whose mass reaches top_p
    auto [sorted, order] = x.sort(/*dim=*/-1, /*descending=*/true);
    auto probs = torch::softmax(sorted, -1);
    auto mass_before = probs.cumsum(-1) - probs;  // (V) mass of the strictly better tokens
    auto drop_sorted = mass_before >= s.top_p;     // the best token is never dropped (mass_before 0)
    auto drop = torch::zeros_like(drop_sorted).scatter(0, order, drop_sorted);
    x = x.masked_fill(drop, neg_inf);
  }
  auto probs = torch::softmax(x, -1);
  return torch::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

Generation generate(CausalLMImpl& model, const std::vector<int64_t>& prompt, const SamplingConfig& s) {
  if (prompt.empty()) throw InputError("generate: the prompt has no tokens");
  check_ids(prompt, vocab_of(model), "prompt");
  torch::NoGradGuard no_grad;
  model.eval();
  auto device = model.parameters().front().device();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(s.seed);
  Generation out;
  out.finish_reason = "length";
  std::vector<int64_t> ids = prompt;
  KVCache cache;
  torch::Tensor logits;  // (1, T, V)
  if (s.use_cache) {
    cache = model.make_cache(1, static_cast<int64_t>(prompt.size()) + s.max_new_tokens);
    logits = model.forward_cached(as_batch(prompt, device), cache);
  }
  for (int64_t step = 0; step < s.max_new_tokens; ++step) {
    if (!s.use_cache) logits = model.forward(as_batch(ids, device));
    int64_t next = sample_next(logits[0][logits.size(1) - 1].to(torch::kCPU), s, gen);
    ids.push_back(next);
    out.ids.push_back(next);
    if (std::find(s.stop_ids.begin(), s.stop_ids.end(), next) != s.stop_ids.end()) {
      out.finish_reason = "eos";
      break;
    }
    if (s.use_cache && step + 1 < s.max_new_tokens) logits = model.forward_cached(as_batch({next}, device), cache);
  }
  return out;
}

TokenScores score_tokens(CausalLMImpl& model, const std::vector<int64_t>& ids) {
  if (ids.size() < 2) throw InputError("score: needs at least two tokens (the first is only context)");
  check_ids(ids, vocab_of(model), "score");
  torch::NoGradGuard no_grad;
  model.eval();
  auto device = model.parameters().front().device();
  auto batch = as_batch(ids, device);                                       // (1, T)
  auto logits = model.forward(batch)[0].narrow(0, 0, batch.size(1) - 1);    // (T-1, V), on the device
  auto next = batch[0].narrow(0, 1, batch.size(1) - 1).unsqueeze(1);        // (T-1, 1)
  // log_softmax in fp64 where the logits are; only the T-1 scored values reach the host.
  auto logp = torch::log_softmax(logits.to(torch::kDouble), -1).gather(1, next).squeeze(1).cpu();  // (T-1)
  TokenScores out;
  for (int64_t t = 0; t < logp.size(0); ++t) {
    double lp = logp[t].item<double>();
    out.logprobs.push_back(lp);
    out.nll -= lp;
  }
  return out;
}

}  // namespace lmforge::trainer
