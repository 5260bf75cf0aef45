// trainer/strategy.cpp -- the three strategies: data parallel (bucketed allreduce during backward),
// ZeRO-1 (reduce-scatter, sharded AdamW) and tensor parallel x data parallel, with the optimizer
// state each checkpoints. Collectives are parallel/'s; the tp shard map is parallelize.h's.
#include "trainer/strategy.h"

#include "core/errors.h"
#include "parallel/comm.h"
#include "parallel/grad_sync.h"
#include "parallel/grid.h"
#include "parallel/tensor_parallel.h"
#include "parallel/zero.h"
#include "trainer/models/model.h"
#include "trainer/parallelize.h"

namespace lmforge::trainer {

namespace {

// Plain data parallel: gradients averaged by GradSync's bucketed allreduce as backward runs, one
// AdamW over the whole model, its moments saved whole by rank 0.
class DataParallel : public Strategy {
 public:
  DataParallel(torch::nn::Module& model, const StrategyOptions& o, parallel::Comm& world, parallel::Comm& dp)
      : model_(model), options_(o), world_(world), dp_(dp),
        grad_sync_(std::make_unique<parallel::GradSync>(model, dp, o.bucket_mb)),
        optimizer_(make_optimizer(model, o.optim)) {
    grad_sync_->broadcast_parameters();
  }
  void begin_backward(bool last) override { grad_sync_->begin_backward(/*sync=*/last); }
  void finish_backward() override { grad_sync_->finish(); }
  torch::Tensor reduce_and_clip(double max_norm) override { return clip_gradients(model_, max_norm); }
  void step(double lr) override {
    set_lr(*optimizer_, lr);
    optimizer_->step();
  }
  void zero_grad() override { optimizer_->zero_grad(); }
  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& targets) override {
    return causal_lm_loss_sum(logits, targets);
  }
  NamedTensors full(const NamedTensors& local) override { return local; }
  NamedTensors local(const NamedTensors& full) override { return full; }
  bool gathers_on_save() const override { return false; }

  void save(CheckpointState& out) override {
    if (out.rank == 0 || gathers_on_save()) {
      NamedTensors moments = full(adamw_state(*optimizer_, named_params()));
      if (out.rank == 0) out.files.tensors[checkpoint_file::kOptimizer] = std::move(moments);
    }
    describe(out.trainer_state);
  }
  // A ZeRO-1 checkpoint resumes only with ZeRO-1 on the same number of ranks, and a plain one only without.
  void check_resumable(const std::string& dir, const nlohmann::json& state) const override {
    const bool saved_zero = state.at("zero").get<bool>();
    const int saved_world = state.at("world_size").get<int>();
    if (saved_zero != options_.zero || (options_.zero && saved_world != world_.size()))
      throw InputError(dir + " was saved with parallel.zero " + std::string(saved_zero ? "1" : "0") + " on " +
                       std::to_string(saved_world) +
                       " ranks; ZeRO-1 optimizer shards resume only with the same setting and number of ranks");
  }
  void load(const std::string& dir, const nlohmann::json& state) override {
    std::string file = dir + "/" + checkpoint_file::kOptimizer;
    load_adamw_state(*optimizer_, named_params(), local(load_safetensors(file)), file);
  }

 protected:
  // trainer_state.json's layout fields, which check_resumable reads back.
  void describe(nlohmann::json& state) const {
    state["world_size"] = world_.size();
    state["zero"] = options_.zero;
    state["tp"] = options_.tp && options_.grid ? options_.grid->tp_size() : 1;
  }
  // The optimizer's parameters named as the model names them.
  NamedParams named_params() {
    std::map<torch::TensorImpl*, std::string> names;
    for (const auto& item : model_.named_parameters()) names[item.value().unsafeGetTensorImpl()] = item.key();
    return optimizer_params(*optimizer_, [&](const torch::Tensor& p, size_t) { return names.at(p.unsafeGetTensorImpl()); });
  }

  torch::nn::Module& model_;
  StrategyOptions options_;
  parallel::Comm& world_;
  parallel::Comm& dp_;
  std::unique_ptr<parallel::GradSync> grad_sync_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
};

// ZeRO-1: gradients reduce-scattered into this rank's shard, AdamW over the shard, parameters
// gathered back; each rank saves its own optimizer shard.
class Zero1 : public DataParallel {
 public:
  Zero1(torch::nn::Module& model, const StrategyOptions& o, parallel::Comm& world, parallel::Comm& dp)
      : DataParallel(model, o, world, dp), zero_(std::make_unique<parallel::ZeroOptimizer>(*optimizer_, dp)) {}
  void begin_backward(bool) override { grad_sync_->begin_backward(/*sync=*/false); }  // reduce-scattered instead
  torch::Tensor reduce_and_clip(double max_norm) override { return zero_->reduce_gradients_and_clip_on_device(max_norm); }
  void step(double lr) override {
    set_lr(zero_->optimizer(), lr);
    zero_->step();
  }
  void save(CheckpointState& out) override {
    out.files.tensors[checkpoint_file::optimizer_shard(out.rank)] = adamw_state(zero_->optimizer(), shard_params());
    describe(out.trainer_state);
  }
  void load(const std::string& dir, const nlohmann::json& state) override {
    std::string file = dir + "/" + checkpoint_file::optimizer_shard(world_.rank());
    load_adamw_state(zero_->optimizer(), shard_params(), load_safetensors(file), file);
  }

 private:
  NamedParams shard_params() {
    return optimizer_params(zero_->optimizer(), [](const torch::Tensor&, size_t i) { return "shard_group" + std::to_string(i); });
  }
  std::unique_ptr<parallel::ZeroOptimizer> zero_;
};

// Tensor parallel within a tp group, data parallel across groups: replicated parameters'
// gradients averaged over tp, the norm summed over shards, the loss vocab-parallel, and
// checkpoints holding full tensors gathered over tp.
class TensorParallelDP : public DataParallel {
 public:
  TensorParallelDP(torch::nn::Module& model, const StrategyOptions& o, parallel::Comm& world, parallel::Comm& dp)
      : DataParallel(model, o, world, dp), tp_(o.tp) {}
  torch::Tensor reduce_and_clip(double max_norm) override {
    tp_->average_replicated_gradients(model_);
    return tp_->clip_gradients(model_, max_norm);
  }
  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& targets) override {
    return parallel::vocab_parallel_cross_entropy_sum(logits, targets, tp_->comm());
  }
  NamedTensors full(const NamedTensors& local) override {
    torch::Device device = model_.parameters().front().device();  // shards travel on the communicator's device
    return tp_->gather(local, device);
  }
  NamedTensors local(const NamedTensors& full) override {
    NamedTensors mine;
    for (const auto& [name, t] : full) mine.emplace_back(name, tp_->shard(name, t));
    return mine;
  }
  bool gathers_on_save() const override { return true; }

 private:
  std::shared_ptr<TensorParallel> tp_;
};

}  // namespace

std::unique_ptr<Strategy> make_strategy(torch::nn::Module& model, const StrategyOptions& options, parallel::Comm& comm) {
  parallel::Comm& dp = options.tp && options.grid ? options.grid->dp() : comm;  // tp = 1: every rank is dp
  if (options.tp) return std::make_unique<TensorParallelDP>(model, options, comm, dp);
  if (options.zero) return std::make_unique<Zero1>(model, options, comm, dp);
  return std::make_unique<DataParallel>(model, options, comm, dp);
}

}  // namespace lmforge::trainer
