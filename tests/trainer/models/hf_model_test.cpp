// tests/trainer/models/hf_model_test.cpp -- HF interop against the independent Python reference in
// tests/fixtures/hf (logits, scores, greedy ids), saving and re-loading HF directories, model.from
// in a YAML config, and one test per bad-input class (config.json, weights, index).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "experiments/config.h"
#include "core/errors.h"
#include "trainer/generate.h"
#include "trainer/models/hf_model.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
using namespace lmforge;
using namespace lmforge::trainer;
using json = nlohmann::json;

namespace {

// The reference is float64 from the same stored weights; lmforge runs in fp32. Two layers of
// width 32 accumulate ~1e-6 of fp32 rounding on logits of magnitude ~5, so 1e-5 is the issue's
// bound with a 10x margin, and tight enough that any wrong equation (a missed bias, RoPE layout,
// GELU variant, norm eps) fails by orders of magnitude.
constexpr double kLogitTol = 1e-5;

const std::vector<std::string> kFixtures = {"llama_gqa",      "llama_tied_v5",       "qwen2_sharded_bf16",
                                            "gpt2",           "gpt2_noprefix_f16",   "mistral_window",
                                            "qwen2_window_layers", "llama_yarn",   "llama_dynamic",
                                            "llama_longrope", "qwen3_gqa",         "qwen3_tied_bf16",
                                            "phi3_longrope",  "phi3_partial_bf16", "gemma2_bf16",
                                            "gemma3_text"};

std::string fixture_dir(const std::string& name) { return std::string(LMFORGE_SOURCE_DIR) + "/tests/fixtures/hf/" + name; }

json reference(const std::string& name) {
  std::ifstream in(fixture_dir(name) + "/reference.json");
  return json::parse(in);
}

torch::Tensor ids_tensor(const json& rows) {  // (B, T)
  std::vector<int64_t> flat;
  for (const auto& row : rows)
    for (const auto& id : row) flat.push_back(id.get<int64_t>());
  return torch::tensor(flat, torch::kLong).view({static_cast<int64_t>(rows.size()), -1});
}

torch::Tensor logits_tensor(const json& ref) {  // (B, T, V) float64
  std::vector<double> flat;
  for (const auto& seq : ref["logits"])
    for (const auto& pos : seq)
      for (const auto& x : pos) flat.push_back(x.get<double>());
  int64_t b = static_cast<int64_t>(ref["logits"].size()), t = static_cast<int64_t>(ref["logits"][0].size());
  return torch::tensor(flat, torch::kDouble).view({b, t, -1});
}

std::vector<int64_t> ids_of(const json& list) { return list.get<std::vector<int64_t>>(); }

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, LogitsMatchTheReferenceWithin1e5) {
  auto ref = reference(GetParam());
  auto model = load_hf_model(fixture_dir(GetParam()));
  torch::NoGradGuard no_grad;
  auto logits = model->forward(ids_tensor(ref["input_ids"])).to(torch::kDouble);
  auto expected = logits_tensor(ref);
  ASSERT_EQ(logits.sizes(), expected.sizes());
  EXPECT_LT((logits - expected).abs().max().item<double>(), kLogitTol) << GetParam();
}

TEST_P(HfFixture, CachedForwardInChunksMatchesTheFullForward) {
  auto ref = reference(GetParam());
  auto model = load_hf_model(fixture_dir(GetParam()));
  torch::NoGradGuard no_grad;
  auto tokens = ids_tensor(ref["input_ids"]);  // (2, 8)
  KVCache cache = model->make_cache(2, 8);
  int64_t start = 0;
  for (int64_t len : {3, 1, 4}) {  // a prompt, one decode step, then a multi-token chunk with a prefix
    auto part = model->forward_cached(tokens.narrow(1, start, len), cache);
    // Against a full forward over the prefix so far: dynamic and longrope RoPE change with the
    // length, so earlier chunks differ from the 8-token forward. Same weights, different
    // summation order in attention: fp32 reassociation only.
    auto prefix = model->forward(tokens.narrow(1, 0, start + len)).narrow(1, start, len);
    EXPECT_LT((part - prefix).abs().max().item<double>(), 1e-5) << GetParam() << " chunk at " << start;
    start += len;
  }
  EXPECT_EQ(cache.length, 8);
}

TEST_P(HfFixture, GreedyIdsMatchTheReferenceWithAndWithoutCache) {
  auto ref = reference(GetParam());
  ModelConfig cfg;
  auto model = load_hf_model(fixture_dir(GetParam()), &cfg);
  SamplingConfig s;
  s.max_new_tokens = ref["greedy"]["max_new_tokens"].get<int64_t>();
  s.stop_ids = cfg.eos_token_ids;
  for (bool cache : {true, false}) {
    s.use_cache = cache;
    auto g = generate(*model, ids_of(ref["greedy"]["prompt_ids"]), s);
    EXPECT_EQ(g.ids, ids_of(ref["greedy"]["new_ids"])) << GetParam() << " cache=" << cache;
  }
}

TEST_P(HfFixture, ScoresMatchTheReferenceLogProbabilities) {
  auto ref = reference(GetParam());
  auto model = load_hf_model(fixture_dir(GetParam()));
  auto scores = score_tokens(*model, ids_of(ref["score"]["ids"]));
  auto expected = ref["score"]["logprobs"].get<std::vector<double>>();
  ASSERT_EQ(scores.logprobs.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(scores.logprobs[i], expected[i], kLogitTol) << i;
  // A sum of 7 terms each within 1e-5.
  EXPECT_NEAR(scores.nll, ref["score"]["nll"].get<double>(), 7 * kLogitTol);
}

TEST_P(HfFixture, SavedDirectoryReloadsToIdenticalLogits) {
  auto dir = fs::temp_directory_path() / ("lmforge_hf_save_" + std::to_string(::getpid()) + "_" + GetParam());
  ModelConfig cfg;
  auto model = load_hf_model(fixture_dir(GetParam()), &cfg);
  HfSaveOptions options;
  options.max_shard_bytes = 20'000;  // forces several shards for these ~80 KB models
  options.copy_files_from = cfg.from;
  save_hf_model(*model, cfg, dir.string(), options);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  int shards = 0;
  for (const auto& entry : fs::directory_iterator(dir)) shards += entry.path().filename().string().rfind("model-", 0) == 0;
  EXPECT_GE(shards, 3);
  auto again = load_hf_model(dir.string());
  torch::NoGradGuard no_grad;
  auto tokens = ids_tensor(reference(GetParam())["input_ids"]);
  EXPECT_TRUE(torch::equal(model->forward(tokens), again->forward(tokens))) << "fp32 save must be lossless";
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFixture, ::testing::ValuesIn(kFixtures));

class HfDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_hf_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // A copy of a fixture directory to damage.
  std::string copy_fixture(const std::string& name) {
    auto to = dir_ / name;
    fs::copy(fixture_dir(name), to, fs::copy_options::recursive);
    return to.string();
  }
  void write_config(const std::string& dir, const json& j) { std::ofstream(dir + "/config.json") << j.dump(); }
  json read_config(const std::string& dir) {
    std::ifstream in(dir + "/config.json");
    return json::parse(in);
  }
  static std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(HfDirTest, ReadsBothRopeSpellingsAndTheFamilyVariants) {
  auto gqa = read_hf_config(fixture_dir("llama_gqa"));
  EXPECT_EQ(gqa.arch, "llama");
  EXPECT_EQ(gqa.kv_heads(), 2);
  EXPECT_DOUBLE_EQ(gqa.rope_theta, 10000.0);
  EXPECT_EQ(gqa.rope.type, "default");
  EXPECT_FALSE(gqa.tie_embeddings);
  auto v5 = read_hf_config(fixture_dir("llama_tied_v5"));
  EXPECT_DOUBLE_EQ(v5.rope_theta, 500000.0);
  EXPECT_EQ(v5.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(v5.rope.factor, 8.0);
  EXPECT_EQ(v5.rope.original_max_positions, 16);
  EXPECT_TRUE(v5.qkv_bias && v5.o_bias && v5.tie_embeddings);
  EXPECT_EQ(v5.eos_token_ids, (std::vector<int64_t>{2, 3}));
  auto qwen = read_hf_config(fixture_dir("qwen2_sharded_bf16"));
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_FALSE(qwen.o_bias);
  auto gpt2 = read_hf_config(fixture_dir("gpt2_noprefix_f16"));
  EXPECT_EQ(gpt2.arch, "gpt2");
  EXPECT_EQ(gpt2.ffn_size(), 4 * 32) << "n_inner null means 4 x n_embd";
  EXPECT_TRUE(gpt2.tie_embeddings) << "GPT-2 ties by default";
}

TEST_F(HfDirTest, BadConfigJsonNamesTheFileAndTheKey) {
  auto dir = copy_fixture("llama_gqa");
  json good = read_config(dir);
  struct Case {
    std::function<void(json&)> damage;
    std::string expected;
  };
  std::vector<Case> cases = {
      {[](json& j) { j.erase("hidden_size"); }, "hidden_size: required, missing"},
      {[](json& j) { j["hidden_size"] = "32"; }, "hidden_size: expected an integer"},
      {[](json& j) { j["model_type"] = "bert"; }, "model_type: 'bert' is not supported"},
      {[](json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads: num_attention_heads 4 is not a multiple"},
      {[](json& j) { j["rope_scaling"] = {{"rope_type", "ntk-by-parts"}, {"factor", 4}}; },
       "rope type 'ntk-by-parts' is not supported"},
      {[](json& j) { j["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1, 1, 1, 1}}, {"long_factor", {1, 2}}}; },
       "rope_scaling.long_factor: expected a list of 4 positive numbers (head_dim / 2), got [1,2]"},
      {[](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}, {"beta_fast", -1}}; },
       "rope_scaling.beta_fast: expected a positive number"},
      {[](json& j) {
         j["model_type"] = "mistral";
         j["sliding_window"] = 4;
         j["layer_types"] = {"sliding_attention"};
       },
       "layer_types: expected 2 entries"},
      {[](json& j) { j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", -1}}; },
       "rope_parameters.rope_theta: expected a positive number"},
      {[](json& j) { j["sliding_window"] = -3; }, "sliding_window: must be at least 1"},
      {[](json& j) {
         j["model_type"] = "mistral";
         j["sliding_window"] = "x";
       },
       "sliding_window: expected an integer"},
      {[](json& j) { j["hidden_act"] = "swish2"; }, "hidden_act: 'swish2' is not supported"},
      {[](json& j) { j = json::array(); }, "expected a JSON object"},
  };
  for (const auto& c : cases) {
    json j = good;
    c.damage(j);
    write_config(dir, j);
    auto err = error_of([&] { read_hf_config(dir); });
    EXPECT_NE(err.find(dir + "/config.json"), std::string::npos) << err;
    EXPECT_NE(err.find(c.expected), std::string::npos) << err;
  }
  std::ofstream(dir + "/config.json") << "{\"model_type\": ";
  EXPECT_NE(error_of([&] { read_hf_config(dir); }).find("config.json: not valid JSON"), std::string::npos);
  fs::remove(dir + "/config.json");
  EXPECT_NE(error_of([&] { read_hf_config(dir); }).find("config.json: cannot open"), std::string::npos);
}

TEST_F(HfDirTest, SlidingWindowSettingsSurviveASave) {
  auto dir = copy_fixture("llama_gqa");
  json j = read_config(dir);
  j["model_type"] = "mistral";
  j["sliding_window"] = 6;  // mistral: a window on every layer unless null
  write_config(dir, j);
  ModelConfig cfg;
  auto model = load_hf_model(dir, &cfg);
  EXPECT_EQ(cfg.sliding_window, 6);
  EXPECT_TRUE(cfg.layer_types.empty()) << "empty: every layer slides";
  save_hf_model(*model, cfg, (dir_ / "saved").string());
  EXPECT_EQ(read_config((dir_ / "saved").string())["model_type"], "mistral") << "the window survives a save";
  EXPECT_EQ(read_hf_config((dir_ / "saved").string()).sliding_window, 6);

  j["model_type"] = "qwen2";
  j["use_sliding_window"] = false;  // qwen2: the window is off unless use_sliding_window
  write_config(dir, j);
  EXPECT_EQ(read_hf_config(dir).sliding_window, 0);
  dir = copy_fixture("qwen2_sharded_bf16");
  j = read_config(dir);
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 1;  // layers from 1 on slide
  write_config(dir, j);
  ModelConfig qwen;
  auto qwen_model = load_hf_model(dir, &qwen);
  EXPECT_EQ(qwen.layer_types, (std::vector<std::string>{"full_attention", "sliding_attention"}));
  save_hf_model(*qwen_model, qwen, (dir_ / "saved_qwen").string());
  json saved = read_config((dir_ / "saved_qwen").string());
  EXPECT_EQ(saved["max_window_layers"], 1) << "v4 spelling";
  EXPECT_EQ(saved["layer_types"], json({"full_attention", "sliding_attention"})) << "v5 spelling";
  EXPECT_EQ(read_hf_config((dir_ / "saved_qwen").string()).layer_types, qwen.layer_types);
}

TEST_F(HfDirTest, SlidingWindowCombinesWithPackedDocuments) {
  auto model = load_hf_model(fixture_dir("mistral_window"));  // window 3
  auto tokens = ids_tensor(reference("mistral_window")["input_ids"]);  // (2, 8)
  torch::NoGradGuard no_grad;
  auto one_doc = model->forward(tokens, {}, torch::zeros({2, 8}, torch::kLong));
  EXPECT_TRUE(one_doc.allclose(model->forward(tokens), 0, 1e-6)) << "one document: the window alone";
  // Two packed documents of 4 with positions restarting: the second equals running it alone.
  auto segments = torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kLong).repeat({2, 1});
  auto positions = torch::tensor({0, 1, 2, 3, 0, 1, 2, 3}, torch::kLong).repeat({2, 1});
  auto packed = model->forward(tokens, positions, segments).narrow(1, 4, 4);
  auto alone = model->forward(tokens.narrow(1, 4, 4).contiguous());
  EXPECT_LT((packed - alone).abs().max().item<double>(), 1e-5) << "fp32 reassociation only";
}

TEST_F(HfDirTest, RopeScalingsSurviveASave) {
  for (const char* name : {"llama_yarn", "llama_dynamic", "llama_longrope"}) {
    ModelConfig cfg;
    auto model = load_hf_model(fixture_dir(name), &cfg);
    auto out = (dir_ / (std::string("saved_") + name)).string();
    save_hf_model(*model, cfg, out);
    ModelConfig back = read_hf_config(out);
    EXPECT_EQ(back.rope.type, cfg.rope.type) << name;
    EXPECT_DOUBLE_EQ(back.rope.factor, cfg.rope.factor) << name;
    EXPECT_EQ(back.rope.original_max_positions, cfg.rope.original_max_positions) << name;
    EXPECT_EQ(back.rope.long_factor, cfg.rope.long_factor) << name;
    for (int64_t length : {4, 8, 40}) {
      auto a = rope_frequencies(cfg, length), b = rope_frequencies(back, length);
      EXPECT_TRUE(a.inv_freq.equal(b.inv_freq)) << name << " at " << length;
      EXPECT_DOUBLE_EQ(a.attention_factor, b.attention_factor) << name;
    }
  }
}

TEST_F(HfDirTest, MissingExtraAndMisshapedTensorsAreListedInOneError) {
  auto dir = copy_fixture("llama_gqa");
  auto tensors = load_safetensors(dir + "/model.safetensors");
  NamedTensors damaged;
  for (auto& [name, t] : tensors) {
    if (name == "model.layers.1.mlp.up_proj.weight") continue;                  // missing
    if (name == "model.norm.weight") t = torch::ones({31});                      // misshaped
    damaged.emplace_back(name, t);
  }
  damaged.emplace_back("model.layers.0.self_attn.q_norm.weight", torch::ones({8}));  // unexpected
  save_safetensors(dir + "/model.safetensors", damaged);
  auto err = error_of([&] { load_hf_model(dir); });
  EXPECT_NE(err.find(dir + ": the weights do not match"), std::string::npos) << err;
  EXPECT_NE(err.find("missing 1:\n    model.layers.1.mlp.up_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("unexpected 1:\n    model.layers.0.self_attn.q_norm.weight (model.safetensors)"),
            std::string::npos) << err;
  EXPECT_NE(err.find("model.norm.weight is [31], config.json implies [32]"), std::string::npos) << err;
}

TEST_F(HfDirTest, Gpt2MisshapedConv1DIsReportedInTheFilesLayout) {
  auto dir = copy_fixture("gpt2");
  NamedTensors damaged;
  for (auto& [name, t] : load_safetensors(dir + "/model.safetensors"))
    damaged.emplace_back(name, name == "transformer.h.0.attn.c_attn.weight" ? t.t().contiguous() : t);
  save_safetensors(dir + "/model.safetensors", damaged);
  auto err = error_of([&] { load_hf_model(dir); });
  EXPECT_NE(err.find("transformer.h.0.attn.c_attn.weight is [96, 32], config.json implies [32, 96]"),
            std::string::npos) << err;
}

TEST_F(HfDirTest, BrokenShardIndexAndMissingWeightsAreClearErrors) {
  auto dir = copy_fixture("qwen2_sharded_bf16");
  fs::remove(dir + "/model-00002-of-00003.safetensors");
  EXPECT_NE(error_of([&] { load_hf_model(dir); }).find("names model-00002-of-00003.safetensors, which does not exist"),
            std::string::npos);
  std::ofstream(dir + "/model.safetensors.index.json") << R"({"weight_map": {"a": "../../etc/passwd"}})";
  EXPECT_NE(error_of([&] { load_hf_model(dir); }).find("is not a file in"), std::string::npos);
  std::ofstream(dir + "/model.safetensors.index.json") << R"({"metadata": {}})";
  EXPECT_NE(error_of([&] { load_hf_model(dir); }).find("needs a \"weight_map\" object"), std::string::npos);
  fs::remove(dir + "/model.safetensors.index.json");
  EXPECT_NE(error_of([&] { load_hf_model(dir); }).find("no model.safetensors or model.safetensors.index.json"),
            std::string::npos);
  std::ofstream(dir + "/pytorch_model.bin") << "pickle";
  EXPECT_NE(error_of([&] { load_hf_model(dir); }).find("lmforge reads safetensors only"), std::string::npos);
}

TEST_F(HfDirTest, CorruptShardFailsWithTheSafetensorsMessage) {
  auto dir = copy_fixture("llama_gqa");
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 10);  // truncated
  auto err = error_of([&] { load_hf_model(dir); });
  EXPECT_NE(err.find(dir + "/model.safetensors: tensor "), std::string::npos) << err;
}

TEST_F(HfDirTest, SavedGpt2UsesConv1DLayoutTiedHeadAndHfNames) {
  ModelConfig cfg;
  auto model = load_hf_model(fixture_dir("gpt2"), &cfg);
  HfSaveOptions options;
  options.dtype = torch::kBFloat16;
  save_hf_model(*model, cfg, dir_.string(), options);
  SafetensorsFile file((dir_ / "model.safetensors").string());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.shape("transformer.h.0.attn.c_attn.weight"), (std::vector<int64_t>{32, 96}));
  EXPECT_EQ(file.dtype("transformer.h.0.attn.c_attn.weight"), torch::kBFloat16);
  EXPECT_FALSE(file.contains("lm_head.weight")) << "a tied head is not written";
  json config = read_config(dir_.string());
  EXPECT_EQ(config["model_type"], "gpt2");
  EXPECT_EQ(config["architectures"][0], "GPT2LMHeadModel");
  EXPECT_EQ(config["n_embd"], 32);
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  EXPECT_EQ(config["eos_token_id"], 2);
}

TEST_F(HfDirTest, SavedLlamaConfigRoundTripsEveryField) {
  ModelConfig cfg;
  auto model = load_hf_model(fixture_dir("llama_tied_v5"), &cfg);
  save_hf_model(*model, cfg, dir_.string());
  ModelConfig back = read_hf_config(dir_.string());
  EXPECT_EQ(read_config(dir_.string())["rope_theta"], 500000.0) << "written in the v4 spelling";
  EXPECT_EQ(back.kv_heads(), cfg.kv_heads());
  EXPECT_EQ(back.head_dim(), cfg.head_dim());
  EXPECT_EQ(back.ffn_size(), cfg.ffn_size());
  EXPECT_EQ(back.rope.type, cfg.rope.type);
  EXPECT_DOUBLE_EQ(back.rope.factor, cfg.rope.factor);
  EXPECT_EQ(back.rope.original_max_positions, cfg.rope.original_max_positions);
  EXPECT_EQ(back.qkv_bias, cfg.qkv_bias);
  EXPECT_EQ(back.o_bias, cfg.o_bias);
  EXPECT_EQ(back.tie_embeddings, cfg.tie_embeddings);
  EXPECT_EQ(back.eos_token_ids, cfg.eos_token_ids);
  EXPECT_EQ(read_hf_config(fixture_dir("qwen2_sharded_bf16")).qkv_bias, true);
}

TEST_F(HfDirTest, ModelFromInYamlTakesTheArchitectureAndWeightsFromTheDirectory) {
  ModelConfig small;  // the byte tokenizer needs 258 ids, more than the fixtures have
  small.arch = "llama";
  small.vocab_size = 258;
  small.hidden_size = 32;
  small.n_layers = 2;
  small.n_heads = 4;
  small.n_kv_heads = 2;
  small.max_seq_len = 64;
  torch::manual_seed(3);
  auto original = build_model(small);
  auto hf_dir = (dir_ / "hf").string();
  save_hf_model(*original, small, hf_dir);
  auto yaml = (dir_ / "c.yaml").string();
  std::ofstream(yaml) << "run:\n  name: t\nmodel:\n  from: " << hf_dir
                      << "\ndata:\n  train: a.txt\ntrain:\n  max_steps: 1\n  seq_len: 16\n";
  Config cfg = load_config(yaml);
  EXPECT_EQ(cfg.model.arch, "llama");
  EXPECT_EQ(cfg.model.hidden_size, 32);
  EXPECT_EQ(cfg.model.kv_heads(), 2);
  torch::manual_seed(4);  // a different random init, which the loaded weights must replace
  auto model = build_model(cfg.model);
  torch::NoGradGuard no_grad;
  auto tokens = torch::randint(0, 258, {2, 16}, torch::kLong);
  EXPECT_TRUE(torch::equal(model->forward(tokens), original->forward(tokens)));
  // The resolved config is loadable again (it repeats config.json's values, which is allowed).
  auto again = (dir_ / "again.yaml").string();
  std::ofstream(again) << cfg.resolved_yaml;
  EXPECT_EQ(load_config(again).model.hidden_size, 32);
}

TEST_F(HfDirTest, ModelFromRejectsConflictingKeysAndBadDirectories) {
  auto yaml = (dir_ / "c.yaml").string();
  std::ofstream(yaml) << "run:\n  name: t\nmodel:\n  from: " << fixture_dir("llama_gqa")
                      << "\n  hidden_size: 64\ndata:\n  train: a.txt\ntrain:\n  max_steps: 1\n";
  auto err = error_of([&] { load_config(yaml); });
  EXPECT_NE(err.find("c.yaml:5:16: error: model.hidden_size: conflicts with"), std::string::npos) << err;
  std::ofstream(yaml) << "run:\n  name: t\nmodel:\n  from: " << (dir_ / "nowhere").string()
                      << "\ndata:\n  train: a.txt\ntrain:\n  max_steps: 1\n";
  err = error_of([&] { load_config(yaml); });
  EXPECT_NE(err.find("model.from: " + (dir_ / "nowhere").string() + ": not a directory"), std::string::npos) << err;
}

TEST_F(HfDirTest, ModelFromBringsTheDirectorysTokenizerUnlessTheConfigDeclinesIt) {
  auto dir = copy_fixture("llama_gqa");
  std::ofstream(dir + "/tokenizer.json")
      << json{{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", json::array()}}},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"added_tokens", {{{"id", 2}, {"content", "</s>"}, {"special", true}}}}}
             .dump();
  std::ofstream(dir + "/tokenizer_config.json") << json{{"eos_token", "</s>"}}.dump();
  auto yaml = (dir_ / "c.yaml").string();
  std::ofstream(yaml) << "run:\n  name: t\nmodel:\n  from: " << dir << "\ndata:\n  train: a.txt\ntrain:\n  max_steps: 1\n  seq_len: 16\n";
  Config cfg = load_config(yaml);
  EXPECT_EQ(cfg.tokenizer.kind, "bpe");
  EXPECT_EQ(cfg.tokenizer.path, dir);
  EXPECT_NE(cfg.resolved_yaml.find("kind: bpe"), std::string::npos) << "the run record names the tokenizer used";
  // Declining it: the byte tokenizer's 258 ids do not fit this 64-token model, which is reported.
  std::ofstream(yaml) << "run:\n  name: t\nmodel:\n  from: " << dir << "\ntokenizer:\n  kind: byte\ndata:\n  train: a.txt\ntrain:\n  max_steps: 1\n  seq_len: 16\n";
  auto err = error_of([&] { load_config(yaml); });
  EXPECT_NE(err.find("model.vocab_size 64 is smaller than the tokenizer's 258"), std::string::npos) << err;
}

}  // namespace
