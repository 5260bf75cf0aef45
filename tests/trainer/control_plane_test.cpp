// tests/trainer/control_plane_test.cpp -- the rule of parallel/comm.h on CPU: training, periodic,
// final and resumed checkpoints and signal checks never hand the device communicator a host tensor
// (make_device_contract_comm enforces NCCL's contract), and a step reads the device once.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/host_sync.h"
#include "parallel/comm.h"
#include "trainer/trainer.h"

using namespace lmforge;
using namespace lmforge::trainer;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("lmforge_control_" + std::to_string(::getpid()) + "_" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Trains 4 steps with a checkpoint every 2 and a final one; `host` carries the control plane
// (null: the device communicator itself, as the trainer did before the rule).
std::unique_ptr<Trainer> trainer_on(parallel::Comm& device, parallel::Comm* host, const fs::path& dir,
                                    bool zero = false, const std::string& rope = "default", int64_t max_seq_len = 16) {
  torch::manual_seed(3);
  ModelConfig mc;
  mc.arch = "llama";
  mc.vocab_size = 40;
  mc.hidden_size = 32;
  mc.n_layers = 1;
  mc.n_heads = 4;
  mc.max_seq_len = max_seq_len;
  mc.rope.type = rope;
  mc.rope.factor = 2.0;
  TrainerSettings s;
  s.train.max_steps = 4;
  s.train.micro_batch_size = 2;
  s.train.grad_accum_steps = 2;
  s.train.seq_len = 16;
  s.train.log_every = 1000;
  s.run_dir = dir.string();
  s.checkpoint.every_steps = dir.empty() ? 0 : 2;
  s.control = host;
  s.zero = zero;
  auto tokens = torch::randint(0, 40, {2000}, at::detail::createCPUGenerator(8), torch::kLong);
  return std::make_unique<Trainer>(build_model(mc), s, data::WindowSampler(tokens, 16, 11), torch::Tensor(), nullptr,
                                   device);
}

}  // namespace

TEST(DeviceContractComm, RefusesHostTensorsNamingTheCollective) {
  auto self = parallel::make_self_comm();
  auto device = parallel::make_device_contract_comm(*self);
  auto t = torch::zeros({3}, torch::kDouble);
  try {
    device->allreduce(t, parallel::ReduceOp::sum);
    ADD_FAILURE() << "a CPU tensor must be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("device communicator: allreduce of a Double [3] tensor on cpu"),
              std::string::npos)
        << e.what();
  }
}

TEST(ControlPlane, CheckpointsSignalsAndLossGoThroughTheHostCommunicator) {
  fs::path dir = temp_dir();
  auto host = parallel::make_self_comm();
  auto device = parallel::make_device_contract_comm(*host);
  auto trainer = trainer_on(*device, host.get(), dir);
  EXPECT_NO_THROW(trainer->run());
  auto resumed = trainer_on(*device, host.get(), dir);
  EXPECT_NO_THROW(resumed->load_checkpoint((dir / "checkpoints" / "step_00000002").string()));
  EXPECT_EQ(resumed->step(), 2);
  fs::remove_all(dir);
}

// The check can fail: without a host communicator the same run hands the device one a host tensor.
TEST(ControlPlane, WithoutAHostCommunicatorTheContractIsBroken) {
  fs::path dir = temp_dir();
  auto self = parallel::make_self_comm();
  auto device = parallel::make_device_contract_comm(*self);
  auto trainer = trainer_on(*device, nullptr, dir);
  EXPECT_THROW(trainer->run(), std::runtime_error);
  fs::remove_all(dir);
}

// The step's host reads go through read_to_host (core/host_sync.h): the loss and the gradient norm
// are read together once per optimizer step, whatever the accumulation (2 micro-steps here) and
// the strategy; the budget is what a GPU step may afford.
TEST(HostSync, OneDeviceReadPerStep) {
  for (bool zero : {false, true}) {
    auto host = parallel::make_self_comm();
    auto trainer = trainer_on(*host, host.get(), "", zero);
    const int64_t before = host_reads();
    trainer->run();
    EXPECT_EQ(host_reads() - before, 4) << (zero ? "zero-1" : "data parallel") << ": 4 steps";
    EXPECT_EQ(trainer->losses().size(), 4u);
  }
}

// Dynamic NTK RoPE depends on the largest position: within max_seq_len the frequencies are the
// unscaled ones whatever it is, so the step still reads once; past it, each forward reads the
// largest position (2 micro-steps x 4 steps more), which the counter sees.
TEST(HostSync, LengthDependentRopeReadsOnlyPastItsConstantRange) {
  for (int64_t max_seq_len : {16, 8}) {
    auto host = parallel::make_self_comm();
    auto trainer = trainer_on(*host, host.get(), "", false, "dynamic", max_seq_len);
    const int64_t before = host_reads();
    trainer->run();
    EXPECT_EQ(host_reads() - before, max_seq_len == 16 ? 4 : 4 + 8) << "max_seq_len " << max_seq_len;
  }
}
