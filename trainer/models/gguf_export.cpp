// trainer/models/gguf_export.cpp -- the GGUF export: general.* keys, the family's hparams and tensor
// names, Q/K permutation, per-tensor types, the tokenizer. The container format is core/gguf.cpp.
#include "trainer/models/gguf_export.h"

#include <stdexcept>

#include "core/errors.h"
#include "data/gguf_tokenizer.h"
#include "trainer/models/family.h"

namespace lmforge::trainer {

namespace {

// llama.cpp's general.file_type (llama_ftype) for a file whose matrices are `t`.
uint32_t file_type(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return 0;   // ALL_F32
    case GgmlType::f16: return 1;   // MOSTLY_F16
    case GgmlType::q4_0: return 2;  // MOSTLY_Q4_0
    case GgmlType::q8_0: return 7;  // MOSTLY_Q8_0
    case GgmlType::bf16: return 32; // MOSTLY_BF16
  }
  return 0;
}

// Rows of a Q or K projection, (heads * D, ...) with each head's halves [x0..x(D/2-1) | y0..],
// reordered to llama.cpp's pairs (x0, y0, x1, y1, ...).
torch::Tensor permute_rope_rows(const torch::Tensor& w, int64_t heads) {
  std::vector<int64_t> shape = {heads, 2, w.size(0) / heads / 2};
  for (int64_t d = 1; d < w.dim(); ++d) shape.push_back(w.size(d));
  return w.reshape(shape).transpose(1, 2).reshape(w.sizes());
}

void add_hparam(GgufWriter& w, const std::string& key, const nlohmann::ordered_json& v) {
  if (v.is_boolean()) w.add_bool(key, v.get<bool>());
  else if (v.is_number_integer()) w.add_u32(key, static_cast<uint32_t>(v.get<int64_t>()));
  else if (v.is_number_float()) w.add_f32(key, static_cast<float>(v.get<double>()));
  else if (v.is_string()) w.add_string(key, v.get<std::string>());
  else throw std::logic_error("GGUF hparam " + key + " has an unsupported JSON type");
}

}  // namespace

GgmlType ggml_type_of(const std::string& name) {
  for (GgmlType t : {GgmlType::f32, GgmlType::f16, GgmlType::bf16, GgmlType::q8_0, GgmlType::q4_0})
    if (name == ggml_type_name(t)) return t;
  throw InputError("--type " + name + ": not a GGUF type lmforge writes (f32, f16, bf16, q8_0, q4_0)");
}

std::vector<std::string> save_gguf(CausalLMImpl& model, const ModelConfig& cfg, const data::Tokenizer& tok,
                                   const std::string& path, const GgufExportOptions& options) {
  const Family& family = family_of_arch(cfg.arch);
  std::string where = path;
  if (!family.gguf)
    throw InputError(where + ": model.arch " + cfg.arch + " has no GGUF form here (llama.cpp architecture not mapped)");
  GgufLayout layout;
  try {
    layout = family.gguf(cfg);
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
  GgufWriter w;
  w.add_string("general.architecture", layout.arch);
  w.add_string("general.name", options.name.empty() ? layout.arch : options.name);
  w.add_u32("general.alignment", 32);  // GGUF's default, written out for readers that want it
  w.add_u32("general.file_type", file_type(options.type));
  if (ggml_block_size(options.type) > 1) w.add_u32("general.quantization_version", 2);  // ggml's current block layouts
  for (const auto& [key, value] : layout.hparams.items()) add_hparam(w, layout.arch + "." + key, value);
  data::add_gguf_tokenizer(w, tok, cfg.vocab_size, where);

  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters()) {
    std::string name = layout.tensor_name(item.key());
    if (name.empty()) continue;
    torch::Tensor t = item.value().detach().to(torch::kCPU, torch::kFloat);
    if (int64_t heads = layout.rope_permute_heads(item.key())) t = permute_rope_rows(t, heads);
    GgmlType type = t.dim() >= 2 ? options.type : GgmlType::f32;
    if (t.size(-1) % ggml_block_size(type) != 0)
      throw InputError(where + ": tensor " + name + " (" + item.key() + ") has rows of " + std::to_string(t.size(-1)) +
                       " values, not a multiple of " + ggml_type_name(type) + "'s block of " +
                       std::to_string(ggml_block_size(type)) + "; choose --type f16, bf16 or f32");
    w.add_tensor(name, t, type);
  }
  w.write(path);
  return layout.notes;
}

}  // namespace lmforge::trainer
