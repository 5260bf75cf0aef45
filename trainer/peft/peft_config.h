// trainer/peft/peft_config.h -- the `peft:` section: method, rank, scaling, targets, what to train in full,
// an adapter to start from. Applying it is apply.h's; the layer is lora_layer.h's.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>


namespace lmforge::config {
class Section;
}

namespace lmforge::trainer {

enum class PeftMethod { none, lora, dora };
enum class LoraInit { kaiming, gaussian };
const char* peft_method_name(PeftMethod m);  // as the config spells it

struct PeftConfig {
  PeftMethod method = PeftMethod::none;  // none | lora | dora
  int64_t r = 8;                // rank: adds r x (in + out) parameters per adapted linear (PEFT's default)
  double alpha = 16.0;          // adapter output scaled by alpha / r: 2 x r, the usual LoRA setting
  double dropout = 0.0;         // on the adapter's input only; PEFT's default
  // Module-name suffixes ("q_proj"), one regex over the qualified name ("model\.layers\.0\..*"),
  // or all-linear (every linear but the output head). Empty: PEFT's defaults, llama q_proj + v_proj,
  // gpt2 c_attn.
  std::vector<std::string> targets;
  bool use_rslora = false;      // scale alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA)
  std::vector<std::string> modules_to_save;  // layers trained in full (e.g. lm_head), by suffix
  LoraInit init = LoraInit::kaiming;  // A's init: kaiming (uniform, as nn.Linear and PEFT) | gaussian (std 1/r); B = 0
  std::string from;              // a PEFT adapter directory to start from; its adapter_config.json
                                 // then decides method, r, alpha, targets and modules_to_save

  bool enabled() const { return method != PeftMethod::none || !from.empty(); }
  double scale() const;  // alpha / r, or alpha / sqrt(r) with use_rslora
};
void read_peft_config(config::Section& s, PeftConfig& c);

// The target spellings peft.targets accepts besides module-name suffixes.
inline const std::string kAllLinearTargets = "all-linear";  // every linear but the output head
// A single target with regex characters is a regex over the qualified name; otherwise suffixes.
bool targets_are_regex(const std::vector<std::string>& targets);
bool has_regex_chars(const std::string& target);

}  // namespace lmforge::trainer
