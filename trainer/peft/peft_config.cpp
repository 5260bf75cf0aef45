// trainer/peft/peft_config.cpp -- reading and checking the `peft:` section and the target spellings.
// What the targets select in a model is apply.cpp's.
#include "trainer/peft/peft_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/config_reader.h"
#include "core/errors.h"
#include "trainer/peft/adapter_dir.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
const std::vector<std::pair<std::string, PeftMethod>> kMethods = {
    {"none", PeftMethod::none}, {"lora", PeftMethod::lora}, {"dora", PeftMethod::dora}};
}  // namespace

const char* peft_method_name(PeftMethod m) {
  for (const auto& [name, method] : kMethods)
    if (method == m) return name.c_str();
  return "none";
}

bool has_regex_chars(const std::string& target) { return target.find_first_of("\\^$.|?*+()[]{}") != std::string::npos; }

bool targets_are_regex(const std::vector<std::string>& targets) { return targets.size() == 1 && has_regex_chars(targets[0]); }

double PeftConfig::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

void read_peft_config(config::Section& s, PeftConfig& c) {
  using config::at_least;
  s.choice("method", c.method, kMethods);
  s.field("r", c.r, at_least(1));
  s.field("alpha", c.alpha, config::greater_than(0));
  s.field("dropout", c.dropout, at_least(0));
  s.field("targets", c.targets);
  s.field("use_rslora", c.use_rslora);
  s.field("modules_to_save", c.modules_to_save);
  s.choice("init", c.init, {{"kaiming", LoraInit::kaiming}, {"gaussian", LoraInit::gaussian}});
  s.field("from", c.from);
  if (c.dropout >= 1) s.error("dropout", "must be below 1 (the fraction of the adapter's input dropped)");
  if (c.targets.size() > 1 && std::find(c.targets.begin(), c.targets.end(), kAllLinearTargets) != c.targets.end())
    s.error("targets", "all-linear stands alone; it already covers every linear but the output head");
  if (targets_are_regex(c.targets) && c.targets[0] != kAllLinearTargets) {
    try {
      std::regex check(c.targets[0]);
    } catch (const std::regex_error& e) {
      s.error("targets", "'" + c.targets[0] + "' is not a valid regular expression: " + e.what());
    }
  }
  for (const auto& t : c.targets)
    if (c.targets.size() > 1 && has_regex_chars(t))
      s.error("targets", "'" + t + "': a list holds module-name suffixes; give a regex as a single string");
  if (!c.from.empty()) {
    try {
      read_peft_adapter_config(c.from);
    } catch (const InputError& e) {
      s.error("from", e.what());
    }
  }
}

}  // namespace lmforge::trainer
