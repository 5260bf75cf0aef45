// tests/parallel/tensor_parallel_test.cpp -- tensor parallelism on real MPI ranks (tp = 2, and
// dp = 2 x tp = 2 under -np 4): the four primitives against hand-computed values, the
// vocab-parallel loss against the full one, whole models (plain and LoRA) at tp = 2 against tp = 1,
// training, and inference through gathered logits.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/errors.h"
#include "parallel/grid.h"
#include "parallel/tensor_parallel.h"
#include "tests/parallel/mpi_world.h"
#include "trainer/generate.h"
#include "trainer/models/hf_model.h"
#include "trainer/parallelize.h"
#include "trainer/peft/adapter_dir.h"
#include "trainer/peft/apply.h"
#include "trainer/peft/peft_config.h"
#include "trainer/tp_layers.h"
#include "trainer/trainer.h"

using namespace lmforge;
using lmforge::testing::world;

namespace {

constexpr int64_t kTp = 2;

// A dp x 2 grid over the test world (-np 2: 1 x 2, -np 4: 2 x 2). Never destroyed: its
// sub-communicators must not be freed after MPI is finalised at exit.
parallel::Grid& grid() {
  static auto* g = new parallel::Grid(world(), 0, kTp);
  return *g;
}

TEST(TensorParallelPrimitives, CopyToIsIdentityForwardAndSumsGradientsBackward) {
  auto& tp = grid().tp();
  const double r = tp.rank() + 1, sum = 3;  // ranks hold 1 and 2
  auto x = torch::full({2, 3}, r).requires_grad_();
  auto y = parallel::copy_to_tp(x, tp);
  EXPECT_TRUE(torch::equal(y, torch::full({2, 3}, r)));
  y.backward(torch::full({2, 3}, r));
  EXPECT_TRUE(torch::equal(x.grad(), torch::full({2, 3}, sum)));
}

TEST(TensorParallelPrimitives, ReduceFromSumsForwardAndPassesGradientsBackward) {
  auto& tp = grid().tp();
  const double r = tp.rank() + 1;
  auto x = torch::full({2, 3}, r).requires_grad_();
  auto y = parallel::reduce_from_tp(x, tp);
  EXPECT_TRUE(torch::equal(y, torch::full({2, 3}, 3.0)));
  y.backward(torch::full({2, 3}, 10 * r));
  EXPECT_TRUE(torch::equal(x.grad(), torch::full({2, 3}, 10 * r)));
}

TEST(TensorParallelPrimitives, GatherFromConcatenatesLastDimsAndKeepsOwnGradientSlice) {
  auto& tp = grid().tp();
  const int64_t r = tp.rank();
  auto x = torch::full({2, 3}, static_cast<double>(r + 1)).requires_grad_();
  auto y = parallel::gather_from_tp(x, tp);  // (2, 6): columns 0-2 from rank 0 (1s), 3-5 from rank 1 (2s)
  auto expected = torch::tensor({1., 1., 1., 2., 2., 2.}).expand({2, 6});
  EXPECT_TRUE(torch::equal(y, expected));
  auto g = torch::arange(6, torch::kFloat).expand({2, 6}).contiguous();
  y.backward(g);
  EXPECT_TRUE(torch::equal(x.grad(), g.narrow(1, 3 * r, 3)));
}

TEST(TensorParallelPrimitives, ScatterToKeepsOwnSliceAndGathersGradients) {
  auto& tp = grid().tp();
  const int64_t r = tp.rank();
  auto x = torch::arange(6, torch::kFloat).expand({2, 6}).contiguous().requires_grad_();
  auto y = parallel::scatter_to_tp(x, tp);
  EXPECT_TRUE(torch::equal(y, torch::arange(3 * r, 3 * r + 3, torch::kFloat).expand({2, 3})));
  y.backward(torch::full({2, 3}, static_cast<double>(r + 1)));
  EXPECT_TRUE(torch::equal(x.grad(), torch::tensor({1., 1., 1., 2., 2., 2.}).expand({2, 6})));
}

TEST(TensorParallelShards, FusedThirdsRoundTrip) {
  auto& tp = grid().tp();
  auto full = torch::arange(36, torch::kFloat).view({12, 3});  // c_attn-like: q, k, v blocks of 4 rows
  auto mine = parallel::shard_of(full, {0, 3}, tp.rank(), tp.size());
  ASSERT_EQ(mine.size(0), 6);
  EXPECT_TRUE(torch::equal(mine[0], full[2 * tp.rank()]));      // my q rows come first
  EXPECT_TRUE(torch::equal(mine[2], full[4 + 2 * tp.rank()]));  // then my k rows
  EXPECT_TRUE(torch::equal(parallel::gather_shards(mine, {0, 3}, tp), full));
  auto wide = torch::arange(24, torch::kFloat).view({4, 6});  // row-parallel: split along the inputs
  EXPECT_TRUE(torch::equal(parallel::gather_shards(parallel::shard_of(wide, {1, 1}, tp.rank(), 2), {1, 1}, tp), wide));
}

TEST(VocabParallelCrossEntropy, MatchesTheFullLossAndGradient) {
  auto& tp = grid().tp();
  auto gen = at::detail::createCPUGenerator(7);
  auto full = (3 * torch::randn({2, 5, 8}, gen)).requires_grad_();  // (B, T, V), the same on every rank
  auto targets = torch::randint(0, 8, {2, 5}, gen, torch::kLong);
  targets[0][1] = -100;
  targets[1][4] = 7;  // a target in rank 1's half
  auto reference = trainer::causal_lm_loss(full, targets);
  reference.backward();
  auto mine = full.detach().chunk(kTp, -1)[tp.rank()].clone().requires_grad_();
  auto loss = parallel::vocab_parallel_cross_entropy_sum(mine, targets, tp) / targets.ne(-100).sum();
  loss.backward();
  // fp32 log-sum-exp over 8 values summed in another order: ~1e-7; a wrong target or
  // normaliser is off by >1e-2.
  EXPECT_NEAR(loss.item<double>(), reference.item<double>(), 1e-6);
  EXPECT_TRUE(torch::allclose(mine.grad(), full.grad().chunk(kTp, -1)[tp.rank()], 1e-5, 1e-7));
}

trainer::ModelConfig llama_gqa() {
  trainer::ModelConfig mc;
  mc.arch = "llama";
  mc.vocab_size = 32;
  mc.hidden_size = 32;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.n_kv_heads = 2;  // grouped-query: each tp rank holds 2 query heads and their 1 kv head
  mc.intermediate_size = 64;
  mc.max_seq_len = 16;
  return mc;
}

trainer::ModelConfig gpt2_tied() {
  trainer::ModelConfig mc;
  mc.arch = "gpt2";
  mc.vocab_size = 30;
  mc.hidden_size = 24;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.max_seq_len = 16;
  mc.tie_embeddings = true;  // the head uses the vocab-parallel embedding's rows
  return mc;
}

// A hub-layout fixture's architecture (tests/fixtures/hf), randomly initialised: the families
// whose config.json alone says what they are (qwen3's head_dim, phi3's fused projections and
// longrope, gemma's caps, windows and local RoPE).
trainer::ModelConfig fixture_arch(const std::string& name) {
  auto mc = trainer::read_hf_config(std::string(LMFORGE_SOURCE_DIR) + "/tests/fixtures/hf/" + name);
  mc.from.clear();
  return mc;
}
const std::vector<std::string> kFamilyFixtures = {"qwen3_gqa", "phi3_longrope", "gemma2_bf16", "gemma3_text"};

// tp = 2 against the same model on one device: logits, loss and every gradient.
void expect_matches_single_device(const trainer::ModelConfig& mc) {
  auto& tp = grid().tp();
  torch::manual_seed(11);
  auto reference = trainer::build_model(mc);
  torch::manual_seed(11);
  auto model = trainer::build_model(mc);
  auto plan = trainer::parallelize(*model, grid());
  EXPECT_LT(model->num_parameters(), reference->num_parameters());  // each rank holds a share

  auto tokens = torch::randint(0, mc.vocab_size, {2, 12}, at::detail::createCPUGenerator(3), torch::kLong);
  auto targets = torch::roll(tokens, -1, 1);
  auto ref_logits = reference->forward(tokens);  // (B, T, V)
  trainer::causal_lm_loss(ref_logits, targets).backward();
  auto logits = model->forward(tokens);  // (B, T, V/2)
  auto loss = parallel::vocab_parallel_cross_entropy_sum(logits, targets, tp) / targets.ne(-100).sum();
  loss.backward();

  // Same fp32 weights; only the order of the sums over the split dims differs (~1e-7 relative).
  auto gathered = parallel::gather_from_tp(logits.detach(), tp);
  EXPECT_LT((gathered - ref_logits.detach()).abs().max().item<double>(), 1e-5);
  // Gradients: sums over heads, ffn and vocab split across ranks, reassociated; 1e-5 absolute plus
  // 1e-4 relative is ~100x that rounding and far below a missing reduction (which halves a gradient).
  // Replicated ones as the strategy leaves them: averaged over tp, per-head ones (q_norm) summed.
  plan->average_replicated_gradients(*model);
  auto ref_params = reference->named_parameters();
  for (const auto& item : model->named_parameters()) {
    auto expected = plan->shard(item.key(), ref_params[item.key()].grad());
    ASSERT_EQ(item.value().grad().sizes(), expected.sizes()) << item.key();
    EXPECT_TRUE(torch::allclose(item.value().grad(), expected, 1e-4, 1e-5))
        << item.key() << " differs by " << (item.value().grad() - expected).abs().max().item<double>();
  }
}

TEST(TensorParallelModel, LlamaWithGroupedQueryAttentionMatchesOneDevice) { expect_matches_single_device(llama_gqa()); }

TEST(TensorParallelModel, Gpt2WithTiedEmbeddingsMatchesOneDevice) { expect_matches_single_device(gpt2_tied()); }

TEST(TensorParallelModel, NewFamiliesMatchOneDevice) {
  for (const auto& name : kFamilyFixtures) {
    SCOPED_TRACE(name);
    expect_matches_single_device(fixture_arch(name));
  }
}

TEST(TensorParallelModel, AFusedQkvWithGroupedQueryAttentionIsRefused) {
  auto errors = trainer::tp_layout_errors(fixture_arch("phi3_partial_bf16"), kTp);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].first, "n_kv_heads");
  EXPECT_NE(errors[0].second.find("a fused qkv_proj with grouped-query attention"), std::string::npos) << errors[0].second;
  EXPECT_TRUE(trainer::tp_layout_errors(fixture_arch("phi3_longrope"), kTp).empty());
}

TEST(TensorParallelModel, ALayerThatDoesNotDivideIsRefusedNamingIt) {
  auto mc = llama_gqa();
  mc.vocab_size = 33;
  auto model = trainer::build_model(mc);
  try {
    trainer::parallelize(*model, grid());
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.embed_tokens has 33 vocabulary rows"), std::string::npos) << e.what();
  }
}

TEST(TensorParallelGrid, LayoutErrorsNameTheKeysAndNumbers) {
  EXPECT_THROW(parallel::check_grid_layout(4, 0, 3), InputError);
  try {
    parallel::check_grid_layout(4, 3, 2);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.dp x parallel.tp is 3 x 2 = 6 but 4 ranks"), std::string::npos);
  }
  auto mc = llama_gqa();
  auto errors = trainer::tp_layout_errors(mc, 4);  // 4 heads divide; 2 kv heads do not
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].first, "n_kv_heads");
  EXPECT_NE(errors[0].second.find("model.n_kv_heads 2"), std::string::npos);
}

struct Trained {
  trainer::CausalLM model;
  std::vector<double> losses;
  NamedTensors full;  // parameters gathered to full tensors
};

// Settings for `steps` steps of a global batch of 8 sequences of 16 tokens: on `tp_grid` (which
// parallelises `model`) or, without it, on one process.
trainer::TrainerSettings settings(trainer::CausalLMImpl& model, parallel::Grid* tp_grid, int64_t steps, double lr) {
  trainer::TrainerSettings s;
  s.train.max_steps = steps;
  s.train.seq_len = 16;
  s.train.log_every = 1000;
  s.optim.lr = lr;
  int64_t dp = 1;
  if (tp_grid) {
    s.grid = tp_grid;
    s.tp = trainer::parallelize(model, *tp_grid);
    dp = tp_grid->dp_size();
  }
  s.train.micro_batch_size = 4;
  s.train.grad_accum_steps = 2 / dp;
  return s;
}

// The llama above trained for 5 steps with a global batch of 8 sequences: on `comm` with
// `tp_grid` (dp x tp) or, without it, on one process.
Trained train(parallel::Comm& comm, parallel::Grid* tp_grid) {
  torch::manual_seed(9);
  auto model = trainer::build_model(llama_gqa());
  trainer::TrainerSettings s = settings(*model, tp_grid, 5, 3e-3);
  s.optim.grad_clip = 0.5;  // low enough to clip: exercises the norm over shards and replicas
  auto tokens = torch::randint(0, 32, {2000}, at::detail::createCPUGenerator(4), torch::kLong);
  trainer::Trainer t(model, s, data::WindowSampler(tokens, 16, 5), torch::Tensor(), nullptr, comm);
  t.run();
  if (s.tp) return {model, t.losses(), s.tp->full_parameters(*model)};
  NamedTensors local;
  for (const auto& item : model->named_parameters()) local.emplace_back(item.key(), item.value().detach());
  return {model, t.losses(), local};
}

TEST(TensorParallelTraining, DpTimesTpMatchesOneProcessWithTheSameGlobalBatch) {
  auto parallel_run = train(world(), &grid());
  auto self = parallel::make_self_comm();
  auto reference = train(*self, nullptr);
  ASSERT_EQ(parallel_run.losses.size(), 5u);
  // fp32: gradients reassociated over ranks (~1e-7 relative per step); a wrong batch slice or a
  // missed reduction moves the loss by >1e-3 from the first step.
  for (size_t i = 0; i < reference.losses.size(); ++i)
    EXPECT_NEAR(parallel_run.losses[i], reference.losses[i], 1e-5) << "step " << i + 1;
  // Adam normalises each update, so ~1e-7 gradient differences move weights by far less than
  // lr = 3e-3; 1e-4 still catches a missed average (off by ~lr per step).
  std::map<std::string, torch::Tensor> ref(reference.full.begin(), reference.full.end());
  for (const auto& [name, t] : parallel_run.full)
    EXPECT_LT((t - ref.at(name)).abs().max().item<double>(), 1e-4) << name;
  // Replicated parameters (the norms) are bit-identical on the ranks of a tp group.
  auto norm = parallel_run.model->named_parameters()["model.norm.weight"].detach().contiguous();
  auto both = grid().tp().allgather(norm).view({kTp, -1});
  EXPECT_TRUE(torch::equal(both[0], both[1]));
}

// ------------------------------------------------------------------------------- LoRA on tp

// Adapters on every linear (column- and row-parallel bases, gpt2's fused c_attn among them) with
// dropout on their inputs; llama also trains its untied lm_head in full (modules_to_save).
trainer::PeftConfig lora_config(bool with_head) {
  trainer::PeftConfig p;
  p.method = trainer::PeftMethod::lora;
  p.r = 4;
  p.alpha = 8;
  p.dropout = 0.25;  // masks drawn alike on every tp rank and as one device draws them
  p.targets = {"all-linear"};
  if (with_head) p.modules_to_save = {"lm_head"};
  return p;
}

// A model adapted on one device, as the trainer builds it (seed, build, apply_lora); B is then
// made non-zero (it starts at 0, which would leave A's gradient 0 and the test blind to it).
trainer::CausalLM adapted_model(const trainer::ModelConfig& mc, const trainer::PeftConfig& p) {
  torch::manual_seed(11);
  auto model = trainer::build_model(mc);
  trainer::apply_lora(*model, p);
  auto gen = at::detail::createCPUGenerator(5);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters())
    if (item.key().find("lora_B") != std::string::npos) item.value().normal_(0, 0.2, gen);
  return model;
}

// LoRA at tp = 2 against tp = 1: logits, and the gradients of adapters and modules_to_save, with
// dropout active (each forward preceded by the same seed); the frozen base gets no gradient.
void expect_lora_matches_single_device(const trainer::ModelConfig& mc, const trainer::PeftConfig& p) {
  auto& tp = grid().tp();
  auto reference = adapted_model(mc, p);
  auto model = adapted_model(mc, p);
  auto plan = trainer::parallelize(*model, grid());
  auto tokens = torch::randint(0, mc.vocab_size, {2, 12}, at::detail::createCPUGenerator(3), torch::kLong);
  auto targets = torch::roll(tokens, -1, 1);
  torch::manual_seed(21);
  auto ref_logits = reference->forward(tokens);
  trainer::causal_lm_loss(ref_logits, targets).backward();
  torch::manual_seed(21);
  auto logits = model->forward(tokens);
  (parallel::vocab_parallel_cross_entropy_sum(logits, targets, tp) / targets.ne(-100).sum()).backward();

  // As for the plain models: the same fp32 weights and dropout masks, sums reassociated over ranks.
  auto gathered = parallel::gather_from_tp(logits.detach(), tp);
  EXPECT_LT((gathered - ref_logits.detach()).abs().max().item<double>(), 1e-5);
  // Gradients: the same 1e-4 relative + 1e-5 absolute as the plain models; a missing copy-to on
  // h (A's gradient from one rank's B rows only) or a dropout mask that differs is off by >1e-2.
  auto ref_params = reference->named_parameters();
  int64_t trained = 0;
  for (const auto& item : model->named_parameters()) {
    const auto& ref = ref_params[item.key()];
    ASSERT_EQ(item.value().requires_grad(), ref.requires_grad()) << item.key();
    if (!ref.requires_grad()) {
      EXPECT_FALSE(item.value().grad().defined()) << item.key() << ": a frozen base weight got a gradient";
      continue;
    }
    ++trained;
    auto expected = plan->shard(item.key(), ref.grad());
    ASSERT_EQ(item.value().grad().sizes(), expected.sizes()) << item.key();
    EXPECT_TRUE(torch::allclose(item.value().grad(), expected, 1e-4, 1e-5))
        << item.key() << " differs by " << (item.value().grad() - expected).abs().max().item<double>();
  }
  EXPECT_GT(trained, 2 * mc.n_layers);
}

TEST(TensorParallelLora, LlamaWithGroupedQueryAttentionMatchesOneDevice) {
  expect_lora_matches_single_device(llama_gqa(), lora_config(true));
}

TEST(TensorParallelLora, Gpt2WithFusedQkvMatchesOneDevice) {
  expect_lora_matches_single_device(gpt2_tied(), lora_config(false));
}

TEST(TensorParallelLora, NewFamiliesMatchOneDevice) {  // phi3: LoRA on the fused qkv_proj and gate_up_proj
  for (const auto& name : kFamilyFixtures) {
    SCOPED_TRACE(name);
    expect_lora_matches_single_device(fixture_arch(name), lora_config(!fixture_arch(name).tie_embeddings));
  }
}

TEST(TensorParallelLora, AdaptersFollowTheirBaseLayersSharding) {
  auto model = adapted_model(llama_gqa(), lora_config(false));
  auto plan = trainer::parallelize(*model, grid());
  auto params = model->named_parameters();
  // q_proj: (32, 32) column-parallel -> B (16, 4) sharded, A (4, 32) whole.
  EXPECT_EQ(params["model.layers.0.self_attn.q_proj.lora_B.weight"].sizes(), (std::vector<int64_t>{16, 4}));
  EXPECT_EQ(params["model.layers.0.self_attn.q_proj.lora_A.weight"].sizes(), (std::vector<int64_t>{4, 32}));
  // down_proj: (32, 64) row-parallel -> A (4, 32) sharded, B (32, 4) whole.
  EXPECT_EQ(params["model.layers.0.mlp.down_proj.lora_A.weight"].sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(params["model.layers.0.mlp.down_proj.lora_B.weight"].sizes(), (std::vector<int64_t>{32, 4}));
  EXPECT_EQ(plan->spec_of("model.layers.0.mlp.down_proj.lora_B.weight"), nullptr);
  auto dora = lora_config(false);
  dora.method = trainer::PeftMethod::dora;
  auto dora_model = adapted_model(llama_gqa(), dora);
  try {
    trainer::parallelize(*dora_model, grid());
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("peft.method dora with parallel.tp"), std::string::npos) << e.what();
  }
}

struct TrainedLora {
  std::vector<double> losses;
  NamedTensors before, after;  // every parameter, full tensors
  NamedTensors adapter;        // the trainable tensors, full, as the checkpoint and export hold them
};

// The LoRA llama trained 3 steps (global batch 8) at tp = 2 (dp x 2 on the test world) or on one
// process. Dropout only at dp = 1: dp ranks draw the masks one process draws for its first micro-step.
TrainedLora train_lora(parallel::Comm& comm, parallel::Grid* tp_grid, bool dropout) {
  auto p = lora_config(true);
  if (!dropout) p.dropout = 0;
  auto model = adapted_model(llama_gqa(), p);
  trainer::TrainerSettings s = settings(*model, tp_grid, 3, 1e-2);
  auto full = [&] {  // copies: replicated parameters come back from full_parameters as themselves
    NamedTensors out = s.tp ? s.tp->full_parameters(*model) : NamedTensors{};
    if (!s.tp)
      for (const auto& item : model->named_parameters()) out.emplace_back(item.key(), item.value().detach());
    for (auto& [name, t] : out) t = t.clone();
    return out;
  };
  TrainedLora out;
  out.before = full();
  auto tokens = torch::randint(0, 32, {2000}, at::detail::createCPUGenerator(4), torch::kLong);
  torch::manual_seed(31);  // the dropout masks' stream, the same on every rank
  trainer::Trainer t(model, s, data::WindowSampler(tokens, 16, 5), torch::Tensor(), nullptr, comm);
  t.run();
  out.losses = t.losses();
  out.after = full();
  out.adapter = s.tp ? s.tp->gather(trainer::trainable_tensors(*model), torch::kCPU) : trainer::trainable_tensors(*model);
  return out;
}

// The PEFT adapter directory of a one-device model holding `adapter` (what lmforge train exports).
std::string export_adapter(const NamedTensors& adapter, const std::string& dir) {
  torch::manual_seed(11);
  auto model = trainer::build_model(llama_gqa());
  trainer::apply_lora(*model, lora_config(true));
  trainer::load_trainable_tensors(*model, adapter, dir);
  trainer::save_peft_adapter(*model, llama_gqa(), lora_config(true), "base", dir);
  return dir + "/adapter_model.safetensors";
}

TEST(TensorParallelLora, TrainingChangesOnlyAdaptersAndExportsWhatOneProcessDoes) {
  const bool dropout = grid().dp_size() == 1;
  auto parallel_run = train_lora(world(), &grid(), dropout);
  auto self = parallel::make_self_comm();
  auto reference = train_lora(*self, nullptr, dropout);
  // fp32 with the same dropout masks: as the plain model's training test, 1e-5 on the loss.
  for (size_t i = 0; i < reference.losses.size(); ++i)
    EXPECT_NEAR(parallel_run.losses[i], reference.losses[i], 1e-5) << "step " << i + 1;
  std::map<std::string, torch::Tensor> before(parallel_run.before.begin(), parallel_run.before.end());
  for (const auto& [name, t] : parallel_run.after) {
    bool trainable = name.find("lora_") != std::string::npos || name.rfind("lm_head", 0) == 0;
    if (trainable) {
      EXPECT_FALSE(torch::equal(t, before.at(name))) << name << " did not train";
    } else {
      EXPECT_TRUE(torch::equal(t, before.at(name))) << name << " is frozen but changed";
    }
  }
  if (world().rank() != 0) return;
  const std::string dir = std::filesystem::temp_directory_path() / ("lmforge_tp_lora_" + std::to_string(getpid()));
  auto a = load_safetensors(export_adapter(parallel_run.adapter, dir + "/tp2"));
  auto b = load_safetensors(export_adapter(reference.adapter, dir + "/tp1"));
  ASSERT_EQ(a.size(), b.size());
  // Same PEFT names and full shapes; values as the weights of the plain training test (Adam's
  // normalised steps keep rounding-level gradient differences far below 1e-4 after 3 steps).
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    ASSERT_EQ(a[i].second.sizes(), b[i].second.sizes()) << a[i].first;
    EXPECT_LT((a[i].second - b[i].second).abs().max().item<double>(), 1e-4) << a[i].first;
  }
  std::filesystem::remove_all(dir);
}

// ------------------------------------------------------------------------- inference at tp > 1

// Scoring and greedy generation, with and without the KV cache (each rank's cache holds its share
// of the kv heads), on a tp-split model seen through InferenceView, against the same model on one
// device; the prompt's ids include some above V/2, which only rank 1's embedding rows hold.
TEST(TensorParallelInference, ScoresAndGreedyIdsEqualOneDevice) {
  std::vector<trainer::ModelConfig> configs = {llama_gqa(), gpt2_tied()};
  for (const auto& name : kFamilyFixtures) configs.push_back(fixture_arch(name));
  for (const auto& mc : configs) {
    torch::manual_seed(11);
    auto reference = trainer::build_model(mc);
    torch::manual_seed(11);
    auto model = trainer::build_model(mc);
    trainer::parallelize(*model, grid());
    trainer::InferenceView view(*model);
    std::vector<int64_t> ids = {1, 25, 9, 3, 17, 28};
    auto want = trainer::score_tokens(*reference, ids);
    auto got = trainer::score_tokens(*model, ids);
    EXPECT_NEAR(got.nll, want.nll, 1e-4);  // six log-softmaxes of logits within 1e-5
    trainer::SamplingConfig s;
    s.max_new_tokens = 8;
    s.temperature = 0;  // greedy
    auto expected = trainer::generate(*reference, ids, s).ids;
    EXPECT_EQ(trainer::generate(*model, ids, s).ids, expected) << mc.arch << " with the KV cache";
    s.use_cache = false;
    EXPECT_EQ(trainer::generate(*model, ids, s).ids, expected) << mc.arch << " recomputing the prefix";
  }
  // Gone with the view: the head returns vocab slices again, for the vocab-parallel loss.
  torch::manual_seed(11);
  auto model = trainer::build_model(llama_gqa());
  trainer::parallelize(*model, grid());
  { trainer::InferenceView view(*model); }
  EXPECT_EQ(model->forward(torch::zeros({1, 3}, torch::kLong)).size(-1), 32 / kTp);
}

}  // namespace
