// tests/trainer/peft/lora_test.cpp -- LoRA/DoRA on built models: exact equality at init, merge parity,
// only adapters train, save/load and PEFT export round trips, rslora scale, and every bad-input path.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/config_reader.h"
#include "core/errors.h"
#include "core/safetensors.h"
#include "experiments/config.h"
#include "trainer/optim.h"
#include "trainer/peft/adapter_dir.h"
#include "trainer/peft/apply.h"
#include "trainer/peft/lora_layer.h"
#include "trainer/peft/peft_config.h"

namespace fs = std::filesystem;
using namespace lmforge;
using namespace lmforge::trainer;
using json = nlohmann::json;

namespace {

// Merging reassociates x W^T + s B (A x) into x (W + s B A)^T: fp32 rounding of ~1e-7 relative
// per dot product, through two layers of width 32, leaves logit differences near 1e-6 on logits
// of magnitude ~1. 1e-5 keeps a 10x margin while a wrong scale or a missed term (the adapters
// below are perturbed to ~0.1 of the base) moves logits by >1e-2.
constexpr double kMergeTol = 1e-5;

ModelConfig small_config(const std::string& arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = arch == "llama" ? 2 : 0;
  c.max_seq_len = 32;
  return c;
}

CausalLM base_model(const std::string& arch = "llama", uint64_t seed = 7) {
  torch::manual_seed(seed);
  return build_model(small_config(arch));
}

PeftConfig lora_config(const std::string& method = "lora", std::vector<std::string> targets = {"all-linear"}) {
  PeftConfig p;
  p.method = method == "dora" ? PeftMethod::dora : PeftMethod::lora;
  p.r = 4;
  p.alpha = 8;
  p.targets = std::move(targets);
  return p;
}

torch::Tensor tokens() {
  torch::manual_seed(99);
  return torch::randint(50, {2, 9});
}

// Moves every adapter away from its init so merged and unmerged paths do real work.
void perturb_adapters(CausalLMImpl& model) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);
  for (auto& item : model.named_parameters())
    if (item.value().requires_grad()) item.value().add_(torch::randn_like(item.value()) * 0.1);
}

std::string temp_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("lmforge_lora_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::string config_errors(const std::string& path) {
  try {
    load_config(path);
  } catch (const lmforge::config::ConfigError& e) {
    return e.what();
  }
  return "";
}

class Methods : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(Methods, LogitsAtInitEqualTheBaseExactly) {
  auto [arch, method] = GetParam();
  auto model = base_model(arch);
  auto before = model->forward(tokens());
  apply_lora(*model, lora_config(method));
  EXPECT_TRUE(model->forward(tokens()).equal(before));
}

TEST_P(Methods, MergedAndUnmergedLogitsAgreeWithinTolerance) {
  auto [arch, method] = GetParam();
  auto model = base_model(arch);
  auto base_logits = model->forward(tokens());
  apply_lora(*model, lora_config(method));
  perturb_adapters(*model);
  auto adapted = model->forward(tokens());
  ASSERT_GT((adapted - base_logits).abs().max().item<double>(), 1e-2) << "the adapters must change the logits";
  merge_lora(*model);
  for (const auto& [name, layer] : named_layers(*model)) EXPECT_EQ(dynamic_cast<LoraLinearImpl*>(layer.get()), nullptr);
  EXPECT_LT((model->forward(tokens()) - adapted).abs().max().item<double>(), kMergeTol);
}

TEST_P(Methods, PeftExportThenLoadGivesTheSameLogits) {
  auto [arch, method] = GetParam();
  auto model = base_model(arch);
  apply_lora(*model, lora_config(method));
  perturb_adapters(*model);
  auto adapted = model->forward(tokens());
  std::string dir = temp_dir("export_" + arch + method);
  save_peft_adapter(*model, small_config(arch), lora_config(method), "base-dir", dir);
  auto fresh = base_model(arch);
  load_peft_adapter(*fresh, dir);
  EXPECT_TRUE(fresh->forward(tokens()).equal(adapted));
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(LlamaGpt2LoraDora, Methods,
                         ::testing::Combine(::testing::Values("llama", "gpt2"), ::testing::Values("lora", "dora")));

TEST(Lora, AfterAStepOnlyAdapterAndSavedModulesChange) {
  auto model = base_model();
  PeftConfig p = lora_config("lora", {"q_proj", "v_proj", "down_proj"});
  p.modules_to_save = {"lm_head"};
  LoraSummary s = apply_lora(*model, p);
  EXPECT_EQ(s.adapted.size(), 6u);
  // r (in + out) per adapted linear: q (32 + 32), v (32 + 16: two kv heads of 8), down (86 + 32); + lm_head 50 x 32.
  int64_t ffn = small_config("llama").ffn_size();
  EXPECT_EQ(s.trainable, 2 * 4 * ((32 + 32) + (32 + 16) + (ffn + 32)) + 50 * 32);
  std::map<std::string, torch::Tensor> before;
  for (const auto& item : model->named_parameters()) before[item.key()] = item.value().detach().clone();
  auto optimizer = make_optimizer(*model, OptimConfig{});
  size_t in_optimizer = 0;
  for (const auto& group : optimizer->param_groups()) in_optimizer += group.params().size();
  EXPECT_EQ(in_optimizer, trainable_tensors(*model).size()) << "only trainable parameters reach the optimizer";
  auto t = tokens();
  causal_lm_loss(model->forward(t), t).backward();
  optimizer->step();
  for (const auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    bool trained = name.find("lora_B") != std::string::npos || name.rfind("lm_head", 0) == 0;
    bool frozen = name.find("lora_") == std::string::npos && name.rfind("lm_head", 0) != 0;
    if (trained) {
      EXPECT_FALSE(item.value().equal(before[name])) << name;
    }
    if (frozen) {
      EXPECT_TRUE(item.value().equal(before[name])) << name << " is a base weight";
    }
  }
}

TEST(Lora, SaveThenLoadIsBitExact) {
  auto model = base_model();
  apply_lora(*model, lora_config("dora"));
  perturb_adapters(*model);
  std::string dir = temp_dir("save");
  save_safetensors(dir + "/adapter.safetensors", trainable_tensors(*model));
  torch::manual_seed(1234);  // different adapter init: the load must overwrite all of it
  auto fresh = base_model();
  apply_lora(*fresh, lora_config("dora"));
  load_trainable_tensors(*fresh, load_safetensors(dir + "/adapter.safetensors"), "adapter.safetensors");
  auto a = model->named_parameters(), b = fresh->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(item.value().equal(b[item.key()])) << item.key();
  EXPECT_TRUE(fresh->forward(tokens()).equal(model->forward(tokens())));
  fs::remove_all(dir);
}

TEST(Lora, PeftFileHasPeftKeyNamesShapesAndConfig) {
  auto model = base_model();
  apply_lora(*model, lora_config("dora", {"q_proj", "k_proj"}));
  std::string dir = temp_dir("names");
  save_peft_adapter(*model, small_config("llama"), lora_config("dora", {"q_proj", "k_proj"}), "my/base", dir);
  SafetensorsFile f(dir + "/adapter_model.safetensors");
  EXPECT_EQ(f.names().size(), 2u * 2u * 3u);
  EXPECT_EQ(f.shape("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(f.shape("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"), (std::vector<int64_t>{16, 4}));
  EXPECT_EQ(f.shape("base_model.model.model.layers.1.self_attn.k_proj.lora_magnitude_vector"), (std::vector<int64_t>{16}));
  json c = json::parse(std::ifstream(dir + "/adapter_config.json"));
  EXPECT_EQ(c["peft_type"], "LORA");
  EXPECT_EQ(c["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c["r"], 4);
  EXPECT_EQ(c["lora_alpha"], 8);
  EXPECT_EQ(c["target_modules"], json({"k_proj", "q_proj"}));
  EXPECT_EQ(c["use_dora"], true);
  EXPECT_EQ(c["base_model_name_or_path"], "my/base");
  fs::remove_all(dir);
}

TEST(Lora, RegexTargetsExportAsAnExactRegex) {
  auto model = base_model();
  auto p = lora_config("lora", {R"(model\.layers\.0\..*_proj)"});
  LoraSummary s = apply_lora(*model, p);
  EXPECT_EQ(s.adapted.size(), 7u) << "every linear of layer 0 and none of layer 1";
  std::string dir = temp_dir("regex");
  save_peft_adapter(*model, small_config("llama"), p, "b", dir);
  json c = json::parse(std::ifstream(dir + "/adapter_config.json"));
  ASSERT_TRUE(c["target_modules"].is_string()) << "a suffix list would adapt layer 1 as well";
  auto again = base_model();
  EXPECT_EQ(load_peft_adapter(*again, dir).adapted, s.adapted);
  fs::remove_all(dir);
}

TEST(Lora, RsloraScalesByAlphaOverSqrtR) {
  PeftConfig p = lora_config();
  p.r = 16;
  EXPECT_DOUBLE_EQ(p.scale(), 8.0 / 16.0);
  p.use_rslora = true;
  EXPECT_DOUBLE_EQ(p.scale(), 8.0 / 4.0);
  // The layer's update is 4x (sqrt(16)) the plain one for the same A and B.
  auto base = std::make_shared<DenseLinearImpl>(8, 6, true);
  torch::nn::init::normal_(base->weight);
  p.use_rslora = false;
  LoraLinearImpl plain(*base, p);
  p.use_rslora = true;
  LoraLinearImpl rs(*base, p);
  {
    torch::NoGradGuard no_grad;
    plain.lora_B->weight.normal_();
    rs.lora_A->weight.copy_(plain.lora_A->weight);
    rs.lora_B->weight.copy_(plain.lora_B->weight);
  }
  auto x = torch::randn({3, 8});
  auto y = base->forward(x);
  EXPECT_TRUE(torch::allclose(rs.forward(x) - y, 4.0 * (plain.forward(x) - y), 1e-4, 1e-5));
}

TEST(Lora, BadTargetsAreClearErrors) {
  auto model = base_model();
  std::string e = error_of([&] { apply_lora(*model, lora_config("lora", {"qq_proj"})); });
  EXPECT_NE(e.find("peft.targets: 'qq_proj' matches no module"), std::string::npos) << e;
  EXPECT_NE(e.find("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"), std::string::npos) << e;
  e = error_of([&] { apply_lora(*model, lora_config("lora", {"embed_tokens"})); });
  EXPECT_NE(e.find("model.embed_tokens, which is not a linear layer"), std::string::npos) << e;
  e = error_of([&] { apply_lora(*model, lora_config("lora", {R"(model\.layers\.9\..*)"})); });
  EXPECT_NE(e.find("matches no linear module"), std::string::npos) << e;
  auto p = lora_config();
  p.modules_to_save = {"nonesuch"};
  e = error_of([&] { apply_lora(*base_model(), p); });
  EXPECT_NE(e.find("peft.modules_to_save: 'nonesuch' matches no layer"), std::string::npos) << e;
}

TEST(Lora, AdapterForAnotherBaseIsAClearError) {
  auto model = base_model();
  apply_lora(*model, lora_config());
  std::string dir = temp_dir("mismatch");
  save_peft_adapter(*model, small_config("llama"), lora_config(), "b", dir);
  ModelConfig wider = small_config("llama");
  wider.hidden_size = 48;
  auto other = build_model(wider);
  std::string e = error_of([&] { load_peft_adapter(*other, dir); });
  EXPECT_NE(e.find("shape: model.layers.0.self_attn.q_proj.lora_A.weight is [4, 32] in the file, [4, 48]"),
            std::string::npos) << e;
  json c = json::parse(std::ifstream(dir + "/adapter_config.json"));
  c["target_modules"] = {"query"};
  std::ofstream(dir + "/adapter_config.json") << c.dump();
  e = error_of([&] { load_peft_adapter(*base_model(), dir); });
  EXPECT_NE(e.find("adapter_config.json does not fit this base model: peft.targets: 'query' matches no module"),
            std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(Lora, ConfigErrorsNameFileLineAndKey) {
  std::string dir = temp_dir("config");
  std::ofstream(dir + "/c.yaml") << "model:\n  arch: llama\ndata:\n  train: a.txt\ntrain:\n  max_steps: 1\n"
                                    "peft:\n  method: lora\n  r: 0\n  dropout: 1.5\n  targets: \"q_proj(\"\n"
                                    "  from: /nonexistent\n";
  std::string e = config_errors(dir + "/c.yaml");
  EXPECT_NE(e.find("c.yaml:9:6: error: peft.r"), std::string::npos) << e;
  EXPECT_NE(e.find("c.yaml:10:12: error: peft.dropout: must be below 1"), std::string::npos) << e;
  EXPECT_NE(e.find("peft.targets: 'q_proj(' is not a valid regular expression"), std::string::npos) << e;
  EXPECT_NE(e.find("peft.from: /nonexistent: not a directory"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(Lora, TargetsAreCheckedAgainstTheModelWhenTheConfigLoads) {
  std::string dir = temp_dir("config_targets");
  std::ofstream(dir + "/c.yaml") << "run:\n  name: t\nmodel:\n  arch: gpt2\ndata:\n  train: a.txt\ntrain:\n  max_steps: 1\n"
                                    "peft:\n  method: lora\n  targets: [c_attn, q_proj]\n";
  std::string e = config_errors(dir + "/c.yaml");
  EXPECT_NE(e.find("c.yaml:11:12: error: peft.targets: 'q_proj' matches no module; the model's linear modules: "
                   "c_attn, c_proj, c_fc"),
            std::string::npos) << e;
  fs::remove_all(dir);
}

}  // namespace
