// trainer/models/rope.cpp -- RoPE frequencies for every HF scaling, the rotary angles of a pass,
// and the rope keys of config.json. Which families use RoPE is theirs to say.
#include "trainer/models/rope.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "trainer/models/hf_config.h"
#include "trainer/models/model.h"

namespace lmforge::trainer {

using json = nlohmann::json;

static torch::Tensor rotate_half(const torch::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return torch::cat({-halves[1], halves[0]}, -1);
}

static torch::Tensor default_inv_freq(int64_t d, double theta) {  // theta^(-2i/d), i < d/2, in fp32
  return torch::pow(theta, -torch::arange(0, d, 2, torch::kDouble) / static_cast<double>(d)).to(torch::kFloat);
}

constexpr double kPi = 3.14159265358979323846;

namespace {

// Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a linear blend in between.
torch::Tensor llama3_inv_freq(const torch::Tensor& inv_freq, const RopeScaling& r) {
  double old_len = static_cast<double>(r.original_max_positions);
  double low_wavelen = old_len / r.low_freq_factor, high_wavelen = old_len / r.high_freq_factor;
  auto wavelen = 2 * kPi / inv_freq;
  auto scaled = torch::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
  auto smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  auto blended = (1 - smooth) * scaled / r.factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, blended, scaled);
}

// YaRN: dimensions that turn fewer than beta_slow times over the original context are
// interpolated (divided by factor), those turning more than beta_fast times are kept, with a
// linear ramp between; cos and sin are scaled by 0.1 ln(factor) + 1 unless given.
RopeFrequencies yarn(const ModelConfig& c, const RopeScaling& r) {
  int64_t d = c.rotary_dim();
  double base = c.rope_theta, original = static_cast<double>(r.original_max_positions);
  auto dim_of = [&](double rotations) {  // the dimension index that turns `rotations` times
    return d * std::log(original / (rotations * 2 * kPi)) / (2 * std::log(base));
  };
  double low = dim_of(r.beta_fast), high = dim_of(r.beta_slow);
  if (r.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(d - 1));
  if (low == high) high += 0.001;  // a one-point ramp would divide by zero
  auto ramp = ((torch::arange(d / 2, torch::kDouble) - low) / (high - low)).clamp(0, 1);
  auto keep = 1 - ramp;  // 1: extrapolate (the original frequency), 0: interpolate
  auto inv_freq = default_inv_freq(d, base).to(torch::kDouble);
  auto mixed = inv_freq / r.factor * (1 - keep) + inv_freq * keep;
  auto mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  double attention = r.attention_factor;
  if (attention <= 0)
    attention = r.mscale > 0 && r.mscale_all_dim > 0 ? mscale(r.factor, r.mscale) / mscale(r.factor, r.mscale_all_dim)
                                                     : mscale(r.factor, 1.0);
  return {mixed.to(torch::kFloat), attention};
}

// LongRoPE: per-dimension divisors, the long set once the sequence outgrows the original context.
RopeFrequencies longrope(const ModelConfig& c, const RopeScaling& r, int64_t length) {
  const auto& divisors = length > r.original_max_positions ? r.long_factor : r.short_factor;
  auto inv_freq = default_inv_freq(c.rotary_dim(), c.rope_theta).to(torch::kDouble) /
                  torch::tensor(divisors, torch::kDouble);
  double attention = r.attention_factor;
  if (attention <= 0)
    attention = r.factor <= 1 ? 1.0
                              : std::sqrt(1 + std::log(r.factor) / std::log(static_cast<double>(r.original_max_positions)));
  return {inv_freq.to(torch::kFloat), attention};
}

}  // namespace

bool rope_varies_with_length(const ModelConfig& c) { return c.rope.type == "dynamic" || c.rope.type == "longrope"; }

int64_t rope_constant_length(const ModelConfig& c) {
  if (c.rope.type == "dynamic") return c.max_seq_len;
  if (c.rope.type == "longrope") return c.rope.original_max_positions;
  return std::numeric_limits<int64_t>::max();
}

RopeFrequencies rope_frequencies(const ModelConfig& c, int64_t length) {
  const RopeScaling& r = c.rope;
  int64_t d = c.rotary_dim();
  auto inv_freq = default_inv_freq(d, c.rope_theta);  // (D/2)
  if (r.type == "linear") return {inv_freq / r.factor, 1.0};
  if (r.type == "llama3") return {llama3_inv_freq(inv_freq, r).to(torch::kFloat), 1.0};
  if (r.type == "yarn") return yarn(c, r);
  if (r.type == "longrope") return longrope(c, r, length);
  if (r.type == "dynamic") {  // NTK-aware: the base grows with the length past max_seq_len
    double ratio = static_cast<double>(std::max(length, c.max_seq_len)) / static_cast<double>(c.max_seq_len);
    double base = c.rope_theta * std::pow(r.factor * ratio - (r.factor - 1), static_cast<double>(d) / (d - 2));
    return {default_inv_freq(d, base), 1.0};
  }
  return {inv_freq, 1.0};
}

RotaryAngles rotary_angles(const torch::Tensor& position_ids, const RopeFrequencies& rope) {
  auto freqs = position_ids.to(torch::kFloat).unsqueeze(-1) * rope.inv_freq.to(position_ids.device());  // (B, T, D/2)
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // (B, 1, T, D)
  return {emb.cos() * rope.attention_factor, emb.sin() * rope.attention_factor};
}

torch::Tensor rotate(const torch::Tensor& x, const RotaryAngles& a) {  // x (B, H, T, D)
  int64_t r = a.cos.size(-1);
  if (r < x.size(-1)) {  // partial rotary: the first r dimensions turn, the rest pass through
    auto turned = rotate(x.narrow(-1, 0, r), a);
    return torch::cat({turned, x.narrow(-1, r, x.size(-1) - r)}, -1);
  }
  return x * a.cos.to(x.dtype()) + rotate_half(x) * a.sin.to(x.dtype());
}

RopeFrequencies default_rope(int64_t dim, double theta) { return {default_inv_freq(dim, theta), 1.0}; }

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& position_ids, double theta) {
  return rotate(x, rotary_angles(position_ids, {default_inv_freq(x.size(-1), theta), 1.0}));
}

// RoPE settings: v4 writes rope_theta and rope_scaling at the top level, v5 nests them in
// rope_parameters. Where v4 and v5 differ (yarn with both factor and
// original_max_position_embeddings), the given factor wins, as in v5.
void read_hf_rope(const HfConfigJson& j, ModelConfig& c) {
  c.rope_theta = j.number("rope_theta", 10000.0);
  json scaling;
  std::string where = "rope_scaling";
  if (j.has("rope_parameters")) {
    where = "rope_parameters";
    scaling = j.raw("rope_parameters");
    if (!scaling.is_object()) throw j.error(where, "expected an object, got " + scaling.dump());
    if (scaling.contains("rope_theta")) {
      if (!scaling["rope_theta"].is_number() || !(scaling["rope_theta"].get<double>() > 0))
        throw j.error(where + ".rope_theta", "expected a positive number, got " + scaling["rope_theta"].dump());
      c.rope_theta = scaling["rope_theta"].get<double>();
    }
  } else if (j.has("rope_scaling")) {
    scaling = j.raw("rope_scaling");
    if (!scaling.is_object()) throw j.error(where, "expected an object or null, got " + scaling.dump());
  }
  if (scaling.is_null()) return;
  std::string type = "default";
  for (const char* key : {"rope_type", "type"})
    if (scaling.contains(key) && scaling[key].is_string()) type = scaling[key].get<std::string>();
  if (type == "su") type = "longrope";  // early Phi-3 configs
  auto given = [&](const char* key) { return scaling.contains(key) && !scaling[key].is_null(); };
  auto number = [&](const char* key, double fallback) {
    if (!given(key)) return fallback;
    if (!scaling[key].is_number() || !(scaling[key].get<double>() > 0))
      throw j.error(where + "." + key, "expected a positive number, got " + scaling[key].dump());
    return scaling[key].get<double>();
  };
  if (type == "default") return;
  const std::vector<std::string> known = {"linear", "dynamic", "yarn", "longrope", "llama3"};
  if (std::find(known.begin(), known.end(), type) == known.end())
    throw j.error(where, "rope type '" + type + "' is not supported (default, linear, dynamic, yarn, longrope, llama3 are)");
  RopeScaling& r = c.rope;
  r.type = type;
  // Phi-3 (v4) keeps original_max_position_embeddings at the top level.
  double fallback_original = type == "llama3" ? 8192.0 : static_cast<double>(j.integer("original_max_position_embeddings", c.max_seq_len));
  r.original_max_positions = static_cast<int64_t>(number("original_max_position_embeddings", fallback_original));
  double stretch = static_cast<double>(c.max_seq_len) / static_cast<double>(r.original_max_positions);
  r.factor = number("factor", type == "yarn" || type == "longrope" ? stretch : 1.0);
  if (type == "llama3") {
    r.low_freq_factor = number("low_freq_factor", 1.0);
    r.high_freq_factor = number("high_freq_factor", 4.0);
    if (r.high_freq_factor <= r.low_freq_factor) throw j.error(where, "high_freq_factor must exceed low_freq_factor");
  }
  if (type == "yarn" || type == "longrope") r.attention_factor = number("attention_factor", 0.0);
  if (type == "yarn") {
    r.beta_fast = number("beta_fast", 32.0);
    r.beta_slow = number("beta_slow", 1.0);
    r.mscale = number("mscale", 0.0);
    r.mscale_all_dim = number("mscale_all_dim", 0.0);
    if (given("truncate")) {
      if (!scaling["truncate"].is_boolean()) throw j.error(where + ".truncate", "expected true or false");
      r.truncate = scaling["truncate"].get<bool>();
    }
  }
  if (type == "longrope") {
    for (auto [key, out] : {std::pair{"short_factor", &r.short_factor}, std::pair{"long_factor", &r.long_factor}}) {
      const json& v = given(key) ? scaling[key] : json();
      bool ok = v.is_array() && static_cast<int64_t>(v.size()) == c.rotary_dim() / 2;
      for (const json& x : v.is_array() ? v : json::array()) ok = ok && x.is_number() && x.get<double>() > 0;
      if (!ok)
        throw j.error(where + "." + key, "expected a list of " + std::to_string(c.rotary_dim() / 2) +
                                             (c.rotary_dim() == c.head_dim() ? " positive numbers (head_dim / 2), got "
                                                                             : " positive numbers (rotated dimensions / 2), got ") + (v.is_null() ? "none" : v.dump()));
      for (const json& x : v) out->push_back(x.get<double>());
    }
  }
}

void write_hf_rope(const ModelConfig& c, json& j) {
  j["rope_theta"] = c.rope_theta;  // the v4 spelling: v4 reads it and v5 migrates it
  const RopeScaling& r = c.rope;
  if (r.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    json& out = j["rope_scaling"] = {{"rope_type", r.type}, {"factor", r.factor}};
    out["original_max_position_embeddings"] = r.original_max_positions;
    if (r.type == "llama3") {
      out["low_freq_factor"] = r.low_freq_factor;
      out["high_freq_factor"] = r.high_freq_factor;
    }
    if (r.attention_factor > 0) out["attention_factor"] = r.attention_factor;
    if (r.type == "yarn") {
      out["beta_fast"] = r.beta_fast;
      out["beta_slow"] = r.beta_slow;
      out["truncate"] = r.truncate;
      if (r.mscale > 0) out["mscale"] = r.mscale;
      if (r.mscale_all_dim > 0) out["mscale_all_dim"] = r.mscale_all_dim;
    }
    if (r.type == "longrope") {
      out["short_factor"] = r.short_factor;
      out["long_factor"] = r.long_factor;
    }
  }
}

}  // namespace lmforge::trainer
