// tests/trainer/checkpoint_test.cpp -- the checkpoint protocol in one process: exact resume of
// the Trainer, manifest verification of damaged files, fallback to the previous valid checkpoint,
// retention, and the error that lists a model-shape mismatch.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "parallel/comm.h"
#include "trainer/checkpoint.h"
#include "core/errors.h"
#include "trainer/trainer.h"

using namespace lmforge;
using namespace lmforge::trainer;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("lmforge_ckpt_" + std::to_string(::getpid()) + "_" +
                                               ::testing::UnitTest::GetInstance()->current_test_info()->name());
  TempDir() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

ModelConfig tiny_model(int64_t hidden = 32) {
  ModelConfig mc;
  mc.arch = "llama";
  mc.vocab_size = 40;
  mc.hidden_size = hidden;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.n_kv_heads = 2;
  mc.max_seq_len = 16;
  return mc;
}

// A trainer over a fixed random corpus; the same seeds every time.
struct TrainerRig {
  parallel::Comm& comm;
  std::string run_dir;
  CausalLM model;
  std::unique_ptr<Trainer> trainer;

  TrainerRig(parallel::Comm& c, const std::string& dir, int64_t steps, ModelConfig mc = tiny_model())
      : comm(c), run_dir(dir) {
    torch::manual_seed(3);
    model = build_model(mc);
    TrainerSettings s;
    s.train.max_steps = steps;
    s.train.micro_batch_size = 4;
    s.train.seq_len = 16;
    s.train.log_every = 1000;
    s.optim.lr = 1e-2;
    s.schedule.warmup_steps = 2;
    s.run_dir = dir;
    s.checkpoint.save_final = false;
    s.checkpoint.every_steps = 2;
    s.checkpoint.keep_last = 2;
    auto tokens = torch::randint(0, 40, {3000}, at::detail::createCPUGenerator(8), torch::kLong);
    trainer = std::make_unique<Trainer>(model, s, data::WindowSampler(tokens, 16, 11), torch::Tensor(), nullptr, comm);
  }
};

void flip_byte(const fs::path& file, std::streamoff offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x40));
}

TEST(Checkpoint, ResumeReproducesTheUninterruptedRunBitForBit) {
  TempDir tmp;
  auto self = parallel::make_self_comm();
  TrainerRig straight(*self, (tmp.path / "a").string(), 7);
  straight.trainer->run();

  TrainerRig first(*self, (tmp.path / "b").string(), 7);  // the same run again; resumed below from its step 4
  first.trainer->run();
  std::string ckpt = (tmp.path / "b" / "checkpoints" / "step_00000004").string();
  ASSERT_EQ(verify_checkpoint(ckpt), "");

  TrainerRig resumed(*self, (tmp.path / "c").string(), 7);
  resumed.trainer->load_checkpoint(ckpt);
  EXPECT_EQ(resumed.trainer->step(), 4);
  resumed.trainer->run();
  const auto& full = straight.trainer->losses();
  const auto& tail = resumed.trainer->losses();
  ASSERT_EQ(tail.size(), 3u);
  // Deterministic CPU kernels, the same thread count, weights/optimizer/sampler restored exactly:
  // equality, not a tolerance.
  for (size_t i = 0; i < tail.size(); ++i) EXPECT_EQ(tail[i], full[4 + i]) << "step " << 5 + i;
  auto p_resumed = resumed.model->named_parameters();
  for (const auto& p : straight.model->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), p_resumed[p.key()])) << p.key();
}

TEST(Checkpoint, DamagedFilesAreReportedAndThePreviousOneIsUsed) {
  TempDir tmp;
  auto self = parallel::make_self_comm();
  TrainerRig run(*self, tmp.path.string(), 6);
  run.trainer->run();  // checkpoints at 2, 4 (6 is the end: no periodic save) -> keep_last 2
  fs::path dir = tmp.path / "checkpoints";
  fs::path newest = dir / "step_00000004", older = dir / "step_00000002";
  ASSERT_TRUE(fs::exists(newest));
  ASSERT_TRUE(fs::exists(older));
  EXPECT_EQ(find_latest_checkpoint(dir.string(), OnCorrupt::fallback), newest.string());

  flip_byte(newest / "model.safetensors", 200);
  EXPECT_NE(verify_checkpoint(newest.string()).find("model.safetensors does not match its SHA-256"), std::string::npos);
  EXPECT_EQ(find_latest_checkpoint(dir.string(), OnCorrupt::fallback), older.string());
  try {
    find_latest_checkpoint(dir.string(), OnCorrupt::error);
    ADD_FAILURE() << "on_corrupt: error must throw";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("step_00000004 is corrupt"), std::string::npos) << e.what();
  }

  fs::resize_file(older / "optimizer.safetensors", 100);
  EXPECT_NE(verify_checkpoint(older.string()).find("optimizer.safetensors has 100 bytes"), std::string::npos);
  EXPECT_EQ(find_latest_checkpoint(dir.string(), OnCorrupt::fallback), "");

  fs::remove(older / "model.safetensors");  // checked before the truncated optimizer file (name order)
  EXPECT_EQ(verify_checkpoint(older.string()), "model.safetensors is missing");
  std::ofstream(newest / "manifest.json") << "{ not json";
  EXPECT_NE(verify_checkpoint(newest.string()).find("not valid JSON"), std::string::npos);
}

TEST(Checkpoint, GarbageLatestAndStaleTempDirectoriesAreIgnored) {
  TempDir tmp;
  auto self = parallel::make_self_comm();
  TrainerRig run(*self, tmp.path.string(), 4);
  run.trainer->run();
  fs::path dir = tmp.path / "checkpoints";
  std::ofstream(dir / "latest") << "\x01garbage";
  fs::create_directories(dir / "step_00000009.tmp");  // a save killed before its commit
  std::ofstream(dir / "step_00000009.tmp" / "model.safetensors") << "half";
  EXPECT_EQ(find_latest_checkpoint(dir.string(), OnCorrupt::fallback), (dir / "step_00000002").string());
}

TEST(Checkpoint, RetentionKeepsTheNewestAndKeepEvery) {
  TempDir tmp;
  auto self = parallel::make_self_comm();
  TrainerRig run(*self, tmp.path.string(), 11);
  run.trainer->run();  // periodic saves at 2, 4, 6, 8, 10; keep_last 2
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(tmp.path / "checkpoints"))
    if (e.is_directory()) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"step_00000008", "step_00000010"}));
}

TEST(Checkpoint, ADifferentModelShapeListsEveryMismatch) {
  TempDir tmp;
  auto self = parallel::make_self_comm();
  TrainerRig run(*self, tmp.path.string(), 3);  // a checkpoint at step 2
  run.trainer->run();
  TrainerRig wider(*self, (tmp.path / "w").string(), 3, tiny_model(48));
  try {
    wider.trainer->load_checkpoint((tmp.path / "checkpoints" / "step_00000002").string());
    ADD_FAILURE() << "a shape mismatch must throw";
  } catch (const InputError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("shape: model.embed_tokens.weight is [40, 32] in the checkpoint, [40, 48] in this model"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("shape: model.layers.1.mlp.down_proj.weight"), std::string::npos) << m;
  }
}

}  // namespace
