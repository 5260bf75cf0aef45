// trainer/models/registry.cpp -- the list of model families, one line each, and lookups over it.
// What a family is lives in family.h; each family's parts live in its own file.
#include "trainer/models/family.h"

#include "core/errors.h"

namespace lmforge::trainer {

// Adding a family: write trainer/models/<name>.cpp defining `const Family& <name>_family()`, and
// add its name here.
#define LMFORGE_MODEL_FAMILIES(X) X(llama) X(gpt2) X(qwen3) X(phi3) X(gemma2) X(gemma3)

#define LMFORGE_DECLARE_FAMILY(name) const Family& name##_family();
LMFORGE_MODEL_FAMILIES(LMFORGE_DECLARE_FAMILY)
#define LMFORGE_LIST_FAMILY(name) &name##_family(),

const std::vector<const Family*>& families() {
  static const std::vector<const Family*> all = {LMFORGE_MODEL_FAMILIES(LMFORGE_LIST_FAMILY)};
  return all;
}

std::vector<std::string> arch_names() {
  std::vector<std::string> names;
  for (const Family* f : families()) names.push_back(f->arch);
  return names;
}

std::vector<std::string> hf_model_types() {
  std::vector<std::string> types;
  for (const Family* f : families()) types.insert(types.end(), f->hf_model_types.begin(), f->hf_model_types.end());
  return types;
}

const Family& family_of_arch(const std::string& arch) {
  for (const Family* f : families())
    if (f->arch == arch) return *f;
  std::string known;
  for (const auto& name : arch_names()) known += (known.empty() ? "" : ", ") + name;
  throw InputError("model.arch: '" + arch + "' is not a model family (" + known + " are)");
}

const Family* family_of_model_type(const std::string& type) {
  for (const Family* f : families())
    for (const auto& t : f->hf_model_types)
      if (t == type) return f;
  return nullptr;
}

}  // namespace lmforge::trainer
