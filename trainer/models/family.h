// trainer/models/family.h -- what a model family registers about itself, and the registry: arch
// names, HF model_types and config.json reading/writing, tensor names, tp plan, LoRA defaults.
// Each family lives in one file (llama.cpp, qwen3.cpp, gpt2.cpp, ...); registry.cpp lists them, one line each.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainer/models/model.h"

namespace lmforge::config {
class Section;
}

namespace lmforge::trainer {

class HfConfigJson;

// What sets a RoPE decoder family's modules apart from llama's (trainer/models/decoder.h); llama's
// is all false. The variants a config.json chooses within a family are ModelConfig's.
struct DecoderShape {
  bool qk_norm = false;            // RMSNorm over each query and key head before RoPE (q_norm, k_norm)
  bool fused_projections = false;  // one qkv_proj and one gate_up_proj (gate first) instead of five linears
  bool norm_plus_one = false;      // RMSNorm scales by (1 + weight), so a norm's weight starts at 0
  bool sandwich_norms = false;     // norms after attention and the MLP as well as before them
  bool embed_scale = false;        // token embeddings multiplied by sqrt(hidden_size)
};

// How a layer splits under tensor parallelism (trainer/parallelize.h applies it).
enum class TpSplit {
  none,    // not a linear tp splits: replicated (or refused, for a linear)
  column,  // output features split: weight rows, bias
  row,     // input features split: weight columns; the bias stays whole
  heads,   // not a linear: replicated, but applied to each head apart (q_norm), so a rank's gradient
           // covers its own heads only and the ranks' gradients are summed
};
struct TpRule {
  TpSplit split = TpSplit::none;
  int64_t groups = 1;  // equal blocks split separately (gpt2's fused q/k/v: 3)
};

// How llama.cpp's GGUF spells a model of the family (trainer/models/gguf_export.h writes the file).
struct GgufLayout {
  std::string arch;                // general.architecture; the hparams' keys are "<arch>.<key>"
  nlohmann::ordered_json hparams;  // key -> value: integers are written as uint32, floats as float32
  std::vector<std::string> notes;  // what llama.cpp will do differently (printed as warnings)
  // A parameter's GGUF tensor name; "" when it is not written (a tied head).
  std::function<std::string(const std::string& name)> tensor_name;
  // For Q/K projection rows (weights and biases) llama.cpp rotates as adjacent pairs: the heads to
  // permute them over from HF's rotate-half layout (llama.cpp's converter does the same); 0: as is.
  std::function<int64_t(const std::string& name)> rope_permute_heads = [](const std::string&) { return 0; };
};

struct Family {
  std::string arch;                         // model.arch
  std::vector<std::string> hf_model_types;  // config.json model_type values it reads
  std::string hf_prefix;                    // the HF names' prefix of the body ("model.", "transformer.")
  std::vector<std::string> lora_targets;    // PEFT's default target_modules for the family
  std::vector<std::string> residual_projections;  // leaf names initialised with std / sqrt(2 n_layers)
  std::vector<std::string> norm_markers;    // a parameter name containing one of these is a norm's
  bool learned_positions = false;           // max_seq_len is a weight's size, not only a limit
  bool hf_conv1d = false;                   // HF stores its linears as Conv1D (in, out): PEFT's fan_in_fan_out
  DecoderShape decoder;                     // the RoPE decoder's modules (decoder.h); unused by gpt2

  std::function<CausalLM(const ModelConfig&)> build;  // the modules, uninitialised
  std::function<int64_t(int64_t hidden)> default_ffn_size;  // intermediate_size when unset
  // YAML checks beyond the common ones (sizes every family has); errors go to `s`.
  std::function<void(config::Section& s, const ModelConfig&)> check_config;
  // config.json -> ModelConfig (arch set; common keys such as eos ids are read by the caller).
  std::function<ModelConfig(const HfConfigJson&, const std::string& model_type)> read_hf_config;
  // The model_type a config is saved as, and its family keys (model_type itself is the caller's).
  std::function<std::string(const ModelConfig&)> hf_model_type;
  std::function<void(const ModelConfig&, const std::string& model_type, nlohmann::json&)> write_hf_config;
  // Whether the HF checkpoint stores this (lmforge-named) parameter transposed (GPT-2's Conv1D).
  std::function<bool(const std::string& name)> hf_transposed = [](const std::string&) { return false; };
  // The tp split of a replaceable layer, by its leaf name ("q_proj").
  std::function<TpRule(const std::string& leaf)> tp_rule;
  // The GGUF form of a config; empty: llama.cpp has no architecture for the family. Throws
  // InputError naming what the config has that llama.cpp's architecture cannot hold.
  std::function<GgufLayout(const ModelConfig&)> gguf;
};

// The family of model.arch `arch`; InputError naming the known ones when none is.
const Family& family_of_arch(const std::string& arch);
// The family reading config.json model_type `type`, or null.
const Family* family_of_model_type(const std::string& type);
// Every registered family, in registry order.
const std::vector<const Family*>& families();
// model.arch values and HF model_types, for messages and the config's choices.
std::vector<std::string> arch_names();
std::vector<std::string> hf_model_types();

}  // namespace lmforge::trainer
