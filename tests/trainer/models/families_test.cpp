// tests/trainer/models/families_test.cpp -- the qwen3, phi3, gemma2 and gemma3 families beyond the
// reference logits (hf_model_test.cpp): HF names and shapes, a LoRA fine-tune on the hub-layout
// fixtures exporting PEFT adapters with the hub's module names, YAML-built models, config round trips.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/safetensors.h"
#include "trainer/models/family.h"
#include "trainer/models/hf_model.h"
#include "trainer/peft/adapter_dir.h"
#include "trainer/peft/apply.h"

namespace fs = std::filesystem;
using namespace lmforge;
using namespace lmforge::trainer;
using json = nlohmann::json;

namespace {

std::string fixture_dir(const std::string& name) { return std::string(LMFORGE_SOURCE_DIR) + "/tests/fixtures/hf/" + name; }

std::string temp_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("lmforge_families_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir.string();
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

std::map<std::string, std::vector<int64_t>> shapes_of(CausalLMImpl& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

// `steps` Adam steps of next-token loss on one batch of tokens (B, T) over `params`; the losses.
std::vector<double> train_on(CausalLMImpl& model, const std::vector<torch::Tensor>& params, const torch::Tensor& tokens,
                             double lr, int steps) {
  torch::optim::Adam opt(params, torch::optim::AdamOptions(lr));
  int64_t t = tokens.size(1) - 1;
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    auto loss = causal_lm_loss(model.forward(tokens.narrow(1, 0, t)), tokens.narrow(1, 1, t));
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  return losses;
}

TEST(FamilyNames, EachFixtureLoadsUnderItsOwnFamily) {
  const std::map<std::string, std::string> arch_of = {{"qwen3_gqa", "qwen3"},      {"phi3_longrope", "phi3"},
                                                      {"gemma2_bf16", "gemma2"},    {"gemma3_text", "gemma3"}};
  for (const auto& [fixture, arch] : arch_of) {
    EXPECT_EQ(read_hf_config(fixture_dir(fixture)).arch, arch) << fixture;
    EXPECT_EQ(family_of_arch(arch).arch, arch);
  }
}

TEST(FamilyNames, HubTensorNamesAndShapes) {
  auto qwen = load_hf_model(fixture_dir("qwen3_gqa"));
  auto q = shapes_of(*qwen);  // head_dim 16 with hidden 32 and 4 heads: q is 64 wide
  EXPECT_EQ(q["model.layers.0.self_attn.q_proj.weight"], (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(q["model.layers.0.self_attn.k_proj.weight"], (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(q["model.layers.0.self_attn.o_proj.weight"], (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(q["model.layers.1.self_attn.q_norm.weight"], (std::vector<int64_t>{16}));
  EXPECT_EQ(q["model.layers.1.self_attn.k_norm.weight"], (std::vector<int64_t>{16}));
  auto phi = load_hf_model(fixture_dir("phi3_partial_bf16"));
  auto p = shapes_of(*phi);  // GQA 4:2 of 8: q 32 + k 16 + v 16; gate and up of 48 each
  EXPECT_EQ(p["model.layers.0.self_attn.qkv_proj.weight"], (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(p["model.layers.0.mlp.gate_up_proj.weight"], (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(p.count("model.layers.0.self_attn.q_proj.weight"), 0u);
  EXPECT_EQ(p.count("lm_head.weight"), 0u) << "tied";
  auto gemma = load_hf_model(fixture_dir("gemma3_text"));
  auto g = shapes_of(*gemma);
  for (const char* norm : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                           "post_feedforward_layernorm"})
    EXPECT_EQ(g[std::string("model.layers.1.") + norm + ".weight"], (std::vector<int64_t>{32})) << norm;
  EXPECT_EQ(g["model.layers.0.self_attn.q_norm.weight"], (std::vector<int64_t>{16}));
  EXPECT_EQ(shapes_of(*load_hf_model(fixture_dir("gemma2_bf16"))).count("model.layers.0.self_attn.q_norm.weight"), 0u);
}

// A LoRA fine-tune of each family with PEFT's default targets: a few steps lower the loss, the
// adapter exports with the hub's module names, and loads back onto a fresh base to the same logits.
struct LoraCase {
  std::string fixture;
  std::vector<std::string> targets;    // peft.targets; empty: the family's defaults
  std::vector<std::string> expected;   // adapter_config.json target_modules
  std::string a_name;                  // one lora_A tensor of the adapter, PEFT-named
  std::vector<int64_t> b_shape;        // that module's lora_B shape (out, r)
};

class FamilyLora : public ::testing::TestWithParam<LoraCase> {};

TEST_P(FamilyLora, FineTuneExportsAPeftAdapterWithTheHubsModuleNames) {
  const LoraCase& c = GetParam();
  ModelConfig cfg;
  auto model = load_hf_model(fixture_dir(c.fixture), &cfg);
  PeftConfig p;
  p.method = PeftMethod::lora;
  p.r = 4;
  p.alpha = 8;
  p.targets = c.targets;
  apply_lora(*model, p);
  std::vector<torch::Tensor> trainable;
  for (const auto& t : model->parameters())
    if (t.requires_grad()) trainable.push_back(t);
  torch::manual_seed(5);
  auto tokens = torch::randint(0, cfg.vocab_size, {4, 12}, torch::kLong);
  auto losses = train_on(*model, trainable, tokens, 1e-2, 8);
  // Eight Adam steps on one batch: the adapters must move the loss visibly (it is ~4 at the start).
  EXPECT_LT(losses.back(), losses.front() - 0.05) << c.fixture;

  auto dir = temp_dir(c.fixture);
  save_peft_adapter(*model, cfg, p, cfg.from, dir);
  json config = read_json(dir + "/adapter_config.json");
  EXPECT_EQ(config["target_modules"], json(c.expected)) << c.fixture;
  EXPECT_EQ(config["fan_in_fan_out"], false);
  SafetensorsFile file(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.contains(c.a_name)) << c.fixture;
  std::string b_name = c.a_name.substr(0, c.a_name.size() - std::string("lora_A.weight").size()) + "lora_B.weight";
  EXPECT_EQ(file.shape(b_name), c.b_shape) << b_name;
  for (const auto& name : file.names()) EXPECT_EQ(name.rfind("base_model.model.model.layers.", 0), 0u) << name;

  auto fresh = load_hf_model(fixture_dir(c.fixture));
  load_peft_adapter(*fresh, dir);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(fresh->forward(tokens), model->forward(tokens))) << "fp32 adapter round trip is lossless";
  fs::remove_all(dir);
}

const std::string kLayer0 = "base_model.model.model.layers.0.";
INSTANTIATE_TEST_SUITE_P(
    Families, FamilyLora,
    ::testing::Values(
        LoraCase{"qwen3_gqa", {}, {"q_proj", "v_proj"}, kLayer0 + "self_attn.q_proj.lora_A.weight", {64, 4}},
        LoraCase{"qwen3_tied_bf16", {"all-linear"}, {"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"},
                 kLayer0 + "self_attn.k_proj.lora_A.weight", {8, 4}},
        LoraCase{"phi3_longrope", {}, {"qkv_proj"}, kLayer0 + "self_attn.qkv_proj.lora_A.weight", {96, 4}},
        LoraCase{"phi3_partial_bf16", {"qkv_proj", "gate_up_proj"}, {"gate_up_proj", "qkv_proj"},
                 kLayer0 + "mlp.gate_up_proj.lora_A.weight", {96, 4}},
        LoraCase{"gemma2_bf16", {}, {"q_proj", "v_proj"}, kLayer0 + "self_attn.v_proj.lora_A.weight", {32, 4}},
        LoraCase{"gemma3_text", {}, {"q_proj", "v_proj"}, kLayer0 + "self_attn.q_proj.lora_A.weight", {64, 4}}),
    [](const ::testing::TestParamInfo<LoraCase>& info) { return info.param.fixture; });

// Built from YAML sizes alone (model.arch, no model.from): the family's modules with its init (gemma's
// (1 + w) norms start at 0, a scale of 1), saved as an HF directory that reloads to the same logits.
class FamilyFromScratch : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyFromScratch, BuildsTrainsAndRoundTripsThroughAnHfDirectory) {
  ModelConfig c;
  c.arch = GetParam();
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 32;
  torch::manual_seed(1);
  auto model = build_model(c);
  bool plus_one = family_of_arch(c.arch).decoder.norm_plus_one;
  EXPECT_TRUE(torch::equal(model->named_parameters()["model.norm.weight"],
                           torch::full({32}, plus_one ? 0.0 : 1.0)));
  auto tokens = torch::randint(0, 40, {2, 10}, torch::kLong);
  auto losses = train_on(*model, model->parameters(), tokens, 3e-3, 5);
  EXPECT_LT(losses.back(), losses.front()) << c.arch;
  auto dir = temp_dir("scratch_" + c.arch);
  save_hf_model(*model, c, dir);
  ModelConfig back;
  auto again = load_hf_model(dir, &back);
  EXPECT_EQ(back.arch, c.arch);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(again->forward(tokens), model->forward(tokens))) << c.arch;
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyFromScratch, ::testing::Values("qwen3", "phi3", "gemma2", "gemma3"));

// Every family key survives a save: sizes, RoPE (scaled and local), caps, windows per layer.
TEST(FamilyConfig, SavedConfigsReadBackTheSameModel) {
  for (const char* fixture : {"qwen3_gqa", "qwen3_tied_bf16", "phi3_longrope", "phi3_partial_bf16", "gemma2_bf16",
                              "gemma3_text"}) {
    ModelConfig cfg;
    auto model = load_hf_model(fixture_dir(fixture), &cfg);
    auto dir = temp_dir(std::string("config_") + fixture);
    save_hf_model(*model, cfg, dir);
    ModelConfig back = read_hf_config(dir);
    EXPECT_EQ(back.arch, cfg.arch) << fixture;
    EXPECT_EQ(back.head_dim(), cfg.head_dim()) << fixture;
    EXPECT_EQ(back.rotary_dim(), cfg.rotary_dim()) << fixture;
    EXPECT_EQ(back.kv_heads(), cfg.kv_heads()) << fixture;
    EXPECT_EQ(back.tie_embeddings, cfg.tie_embeddings) << fixture;
    EXPECT_EQ(back.sliding_window, cfg.sliding_window) << fixture;
    EXPECT_EQ(back.layer_types, cfg.layer_types) << fixture;
    EXPECT_EQ(back.rope.type, cfg.rope.type) << fixture;
    EXPECT_DOUBLE_EQ(back.rope_theta, cfg.rope_theta) << fixture;
    EXPECT_DOUBLE_EQ(back.rope_local_theta, cfg.rope_local_theta) << fixture;
    EXPECT_DOUBLE_EQ(back.query_scale > 0 ? back.query_scale : back.head_dim(),
                     cfg.query_scale > 0 ? cfg.query_scale : cfg.head_dim()) << fixture;
    EXPECT_DOUBLE_EQ(back.attn_softcap, cfg.attn_softcap) << fixture;
    EXPECT_DOUBLE_EQ(back.final_softcap, cfg.final_softcap) << fixture;
    auto again = load_hf_model(dir);
    torch::NoGradGuard no_grad;
    auto tokens = torch::tensor({1, 5, 9, 22, 3, 40, 17, 8}, torch::kLong).view({1, 8});
    EXPECT_TRUE(torch::equal(again->forward(tokens), model->forward(tokens))) << fixture;
    fs::remove_all(dir);
  }
  auto gemma2 = read_hf_config(fixture_dir("gemma2_bf16"));
  EXPECT_EQ(gemma2.layer_types, (std::vector<std::string>{"sliding_attention", "full_attention"}));
  EXPECT_DOUBLE_EQ(gemma2.query_scale, 24);
  auto gemma3 = read_hf_config(fixture_dir("gemma3_text"));
  EXPECT_DOUBLE_EQ(gemma3.rope_local_theta, 1e4);
  EXPECT_DOUBLE_EQ(gemma3.rope_theta, 1e6);
  EXPECT_EQ(read_hf_config(fixture_dir("phi3_partial_bf16")).rotary_dim(), 4);
}

// transformers v5 writes gemma3's RoPE as one set per layer type: the same model as the v4 keys.
TEST(FamilyConfig, Gemma3ReadsV5RopeParametersPerLayerType) {
  auto dir = temp_dir("gemma3_v5");
  fs::copy(fixture_dir("gemma3_text"), dir, fs::copy_options::recursive);
  json j = read_json(dir + "/config.json");
  for (const char* key : {"rope_theta", "rope_scaling", "rope_local_base_freq"}) j.erase(key);
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 1e6}}},
                          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}};
  std::ofstream(dir + "/config.json") << j.dump();
  ModelConfig v4, v5;
  auto a = load_hf_model(fixture_dir("gemma3_text"), &v4);
  auto b = load_hf_model(dir, &v5);
  EXPECT_EQ(v5.rope.type, "linear");
  EXPECT_DOUBLE_EQ(v5.rope.factor, 2.0);
  EXPECT_DOUBLE_EQ(v5.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(v5.rope_local_theta, 1e4);
  torch::NoGradGuard no_grad;
  auto tokens = torch::tensor({1, 5, 9, 22, 3, 40, 17, 8}, torch::kLong).view({1, 8});
  EXPECT_TRUE(torch::equal(a->forward(tokens), b->forward(tokens)));
  fs::remove_all(dir);
}

// Keys whose math a family lacks, or values it does not implement: an InputError naming the file
// and the key (exit 2 from the CLI), never a silently different model.
TEST(FamilyConfig, UnsupportedKeysAreErrorsNamingTheKey) {
  struct Case {
    std::string fixture;
    std::function<void(json&)> damage;
    std::string expected;
  };
  std::vector<Case> cases = {
      {"qwen3_gqa", [](json& j) { j["attn_logit_softcapping"] = 30.0; }, "attn_logit_softcapping: 30.0 is not supported for model_type qwen3"},
      {"qwen3_gqa", [](json& j) { j["partial_rotary_factor"] = 0.5; }, "partial_rotary_factor: 0.5 is not supported"},
      {"qwen3_gqa", [](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act: 'gelu' is not supported (silu is)"},
      {"qwen3_gqa", [](json& j) { j["rope_scaling"] = {{"rope_type", "mrope"}}; }, "rope type 'mrope' is not supported"},
      {"phi3_longrope", [](json& j) { j["attention_bias"] = true; }, "attention_bias: true is not supported for model_type phi3"},
      {"phi3_longrope", [](json& j) { j["partial_rotary_factor"] = 0.1; }, "partial_rotary_factor: head_dim 8 x 0.1"},
      {"phi3_longrope", [](json& j) { j["rope_scaling"]["short_factor"] = {1.0, 1.0}; },
       "rope_scaling.short_factor: expected a list of 4 positive numbers"},
      {"phi3_partial_bf16", [](json& j) { j["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1, 1, 1, 1}}, {"long_factor", {1, 1, 1, 1}}}; },
       "rope_scaling.short_factor: expected a list of 2 positive numbers (rotated dimensions / 2)"},
      {"gemma2_bf16", [](json& j) { j["hidden_activation"] = "gelu"; }, "hidden_activation: 'gelu' is not supported"},
      {"gemma2_bf16", [](json& j) { j["use_bidirectional_attention"] = true; }, "use_bidirectional_attention: true is not supported"},
      {"gemma2_bf16", [](json& j) { j["attn_logit_softcapping"] = "50"; }, "attn_logit_softcapping: expected a number"},
      {"gemma3_text", [](json& j) { j["rope_parameters"] = {{"sliding_attention", {{"rope_type", "linear"}, {"factor", 2}}}}; },
       "rope_parameters.sliding_attention: rope type 'linear' is not supported (default is)"},
      {"gemma3_text", [](json& j) { j["rope_parameters"] = {{"chunked_attention", json::object()}}; },
       "rope_parameters.chunked_attention: not a layer type"},
      {"gemma3_text", [](json& j) { j["layer_types"] = {"sliding_attention"}; }, "layer_types: expected 2 entries"},
  };
  auto root = temp_dir("bad_keys");
  for (const auto& c : cases) {
    auto dir = root + "/" + c.fixture;
    fs::remove_all(dir);
    fs::create_directories(dir);
    json j = read_json(fixture_dir(c.fixture) + "/config.json");
    c.damage(j);
    std::ofstream(dir + "/config.json") << j.dump();
    std::string err;
    try {
      read_hf_config(dir);
    } catch (const InputError& e) {
      err = e.what();
    }
    EXPECT_NE(err.find(dir + "/config.json: "), std::string::npos) << err;
    EXPECT_NE(err.find(c.expected), std::string::npos) << err;
  }
  fs::remove_all(root);
}

// Gemma's sliding layers and gemma3's local RoPE base are real: changing either changes the
// logits (the fixtures' 8 tokens outrun the window of 3).
TEST(FamilyConfig, WindowsAndLocalRopeChangeTheResult) {
  auto tokens = torch::tensor({1, 5, 9, 22, 3, 40, 17, 8}, torch::kLong).view({1, 8});
  ModelConfig cfg;
  auto model = load_hf_model(fixture_dir("gemma3_text"), &cfg);
  torch::NoGradGuard no_grad;
  auto base = model->forward(tokens);
  for (int variant = 0; variant < 2; ++variant) {
    ModelConfig other = cfg;
    if (variant == 0) other.rope_local_theta = cfg.rope_theta;  // one base everywhere
    if (variant == 1) other.sliding_window = 0;                 // no windows
    auto changed = build_model(other);
    EXPECT_GT((changed->forward(tokens) - base).abs().max().item<double>(), 1e-3) << "variant " << variant;
  }
}

}  // namespace
