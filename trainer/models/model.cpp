// trainer/models/model.cpp -- the `model:` section, build_model (family lookup, init, HF weights),
// parameter counts and the loss. The modules of each family live in its own file.
#include "trainer/models/model.h"

#include <algorithm>
#include <cmath>

#include "core/config_reader.h"
#include "core/errors.h"
#include "core/files.h"
#include "trainer/models/family.h"
#include "trainer/models/hf_model.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;

int64_t ModelConfig::ffn_size() const {
  if (intermediate_size > 0) return intermediate_size;
  return family_of_arch(arch).default_ffn_size(hidden_size);
}

void read_model_config(config::Section& s, ModelConfig& c) {
  using config::at_least;
  s.field("from", c.from);
  ModelConfig from_dir;
  if (!c.from.empty()) {
    try {
      from_dir = read_hf_config(c.from);
    } catch (const InputError& e) {
      s.error("from", e.what());
      c.from.clear();
    }
    if (!c.from.empty()) {  // config.json supplies the defaults; YAML may only repeat them
      from_dir.from = c.from;
      from_dir.init_std = c.init_std;
      c = from_dir;
    }
  }
  s.field("arch", c.arch, arch_names(), c.from.empty() ? config::Need::required : config::Need::optional);
  s.field("vocab_size", c.vocab_size, at_least(1));
  s.field("hidden_size", c.hidden_size, at_least(1));
  s.field("n_layers", c.n_layers, at_least(1));
  s.field("n_heads", c.n_heads, at_least(1));
  s.field("n_kv_heads", c.n_kv_heads, at_least(0));
  s.field("intermediate_size", c.intermediate_size, at_least(0));
  s.field("max_seq_len", c.max_seq_len, at_least(1));
  s.field("rope_theta", c.rope_theta, config::greater_than(0));
  s.field("norm_eps", c.norm_eps, config::greater_than(0));
  s.field("tie_embeddings", c.tie_embeddings);
  s.field("init_std", c.init_std, config::greater_than(0));
  if (!c.from.empty()) {
    auto conflict = [&](const std::string& key, bool differs, const std::string& theirs) {
      if (differs)
        s.error(key, "conflicts with " + c.from + "/config.json (" + theirs + "); drop the key or model.from");
    };
    auto near = [](double a, double b) { return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b)); };
    conflict("arch", c.arch != from_dir.arch, from_dir.arch);
    conflict("vocab_size", c.vocab_size != from_dir.vocab_size, std::to_string(from_dir.vocab_size));
    conflict("hidden_size", c.hidden_size != from_dir.hidden_size, std::to_string(from_dir.hidden_size));
    conflict("n_layers", c.n_layers != from_dir.n_layers, std::to_string(from_dir.n_layers));
    conflict("n_heads", c.n_heads != from_dir.n_heads, std::to_string(from_dir.n_heads));
    conflict("n_kv_heads", c.kv_heads() != from_dir.kv_heads(), std::to_string(from_dir.kv_heads()));
    conflict("intermediate_size", c.ffn_size() != from_dir.ffn_size(), std::to_string(from_dir.ffn_size()));
    conflict("max_seq_len", family_of_arch(c.arch).learned_positions && c.max_seq_len != from_dir.max_seq_len,
             std::to_string(from_dir.max_seq_len) + " learned positions");
    conflict("rope_theta", !near(c.rope_theta, from_dir.rope_theta), std::to_string(from_dir.rope_theta));
    conflict("norm_eps", !near(c.norm_eps, from_dir.norm_eps), std::to_string(from_dir.norm_eps));
    conflict("tie_embeddings", c.tie_embeddings != from_dir.tie_embeddings, from_dir.tie_embeddings ? "true" : "false");
    return;
  }
  if (c.hidden_size % c.n_heads != 0)
    s.error("n_heads", "hidden_size " + std::to_string(c.hidden_size) + " is not divisible by n_heads " +
                           std::to_string(c.n_heads));
  if (c.kv_heads() > c.n_heads || c.n_heads % c.kv_heads() != 0)
    s.error("n_kv_heads", "n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                              std::to_string(c.kv_heads()));
  for (const std::string& arch : arch_names())  // an unknown arch was reported by s.field
    if (arch == c.arch) family_of_arch(arch).check_config(s, c);
}

int64_t CausalLMImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto flat = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat);  // (B*T, V)
  return F::cross_entropy(flat, targets.reshape({-1}), F::CrossEntropyFuncOptions().ignore_index(-100));
}

torch::Tensor causal_lm_loss_sum(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto flat = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat);  // (B*T, V)
  return F::cross_entropy(flat, targets.reshape({-1}),
                          F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

static void init_weights(CausalLMImpl& model, const ModelConfig& c) {
  const Family& f = model.family();
  torch::NoGradGuard no_grad;
  double residual_std = c.init_std / std::sqrt(2.0 * c.n_layers);  // GPT-2: keeps the residual stream's variance flat
  for (const auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    auto p = item.value();
    bool is_norm = std::any_of(f.norm_markers.begin(), f.norm_markers.end(),
                               [&](const std::string& marker) { return name.find(marker) != std::string::npos; });
    bool is_residual = std::any_of(f.residual_projections.begin(), f.residual_projections.end(),
                                   [&](const std::string& leaf) { return ends_with(name, leaf + ".weight"); });
    if (is_norm && ends_with(name, ".weight")) {
      p.fill_(f.decoder.norm_plus_one ? 0.0 : 1.0);  // a scale of 1 either way
    } else if (ends_with(name, ".bias")) {
      p.zero_();
    } else if (is_residual) {
      p.normal_(0.0, residual_std);
    } else {
      p.normal_(0.0, c.init_std);
    }
  }
}

CausalLM build_model(const ModelConfig& cfg) {
  CausalLM model = family_of_arch(cfg.arch).build(cfg);
  if (cfg.from.empty()) {
    init_weights(*model, cfg);
  } else {
    load_hf_weights(*model, cfg);  // strict: every parameter is overwritten, so no random init first
  }
  return model;
}

}  // namespace lmforge::trainer
