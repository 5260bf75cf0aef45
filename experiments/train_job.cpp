// experiments/train_job.cpp -- the train flow: processes and config agreed, data prepared on rank 0,
// the run opened (or resumed), model built, PEFT applied, parallelized, trained and exported.
#include "experiments/train_job.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/digest.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/run_dir.h"
#include "data/pipeline.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "experiments/config.h"
#include "experiments/eval_suite.h"
#include "experiments/run_record.h"
#include "experiments/runs.h"
#include "parallel/comm.h"
#include "parallel/grid.h"
#include "parallel/launcher.h"
#include "trainer/checkpoint.h"
#include "trainer/models/hf_model.h"
#include "trainer/parallelize.h"
#include "trainer/peft/adapter_dir.h"
#include "trainer/peft/apply.h"
#include "trainer/peft/lora_run.h"
#include "trainer/tp_layers.h"
#include "trainer/trainer.h"

namespace lmforge::experiments {

namespace {

// Runs `work` on rank 0 only; an InputError there is rethrown, with the same message, on every rank.
template <class Work>
void on_rank0(parallel::Comm& comm, Work&& work) {
  std::string error;
  if (comm.rank() == 0) {
    try {
      work();
    } catch (const InputError& e) {
      error = e.what();
    }
  }
  error = parallel::broadcast_string(comm, error, 0);
  if (!error.empty()) throw InputError(error);
}

// Rank 0 prepares the dataset (or finds it prepared); every rank then opens and verifies it.
// Every rank gets the same answer or the same error.
data::PreparedDataset prepare_on_rank0(const Config& cfg, const data::Tokenizer& tokenizer, parallel::Comm& comm) {
  data::PreparedDataset prepared;
  on_rank0(comm, [&] {
    prepared = data::prepare_dataset(cfg.data, tokenizer, {cfg.train.seq_len, static_cast<uint64_t>(cfg.run.seed)});
  });
  prepared.dir = parallel::broadcast_string(comm, prepared.dir, 0);
  prepared.id = parallel::broadcast_string(comm, prepared.id, 0);
  prepared.manifest = nlohmann::json::parse(parallel::broadcast_string(comm, prepared.manifest.dump(), 0));
  return prepared;
}

// Loads the config on every rank and refuses to start, on every rank, if any rank resolved a
// different one (different --set values, files or versions on different nodes).
Config load_config_on_every_rank(parallel::Comm& comm, const std::string& path, const std::vector<std::string>& sets) {
  Config cfg = load_config(path, sets);
  if (comm.size() == 1) return cfg;
  std::string hash = sha256_hex(cfg.resolved_yaml);
  auto mine = torch::from_blob(hash.data(), {64}, torch::kByte).clone();
  auto all = comm.allgather(mine).view({comm.size(), 64});
  std::string root_yaml = parallel::broadcast_string(comm, cfg.resolved_yaml, 0);
  for (int r = 1; r < comm.size(); ++r) {
    if (torch::equal(all[r], all[0])) continue;
    std::string message = "rank " + std::to_string(r) + " resolved a different config than rank 0; refusing to train.";
    if (comm.rank() == r) {
      for (const auto& d : config_differences(root_yaml, cfg.resolved_yaml)) message += "\n  " + d + " (rank 0 vs this rank)";
    }
    throw InputError(message);
  }
  return cfg;
}

std::vector<std::string> gather_hosts(parallel::Comm& comm) {
  char host[64] = {0};
  gethostname(host, sizeof host - 1);
  auto all = comm.allgather(torch::from_blob(host, {64}, torch::kByte).clone()).view({comm.size(), 64});
  std::vector<std::string> hosts;
  for (int r = 0; r < comm.size(); ++r) hosts.emplace_back(reinterpret_cast<const char*>(all[r].contiguous().data_ptr()));
  return hosts;
}

// parallel.backend resolved against the device: NCCL carries CUDA tensors, MPI CPU ones.
parallel::Backend resolve_backend(parallel::Backend requested, const parallel::DeviceChoice& device) {
  using parallel::Backend;
  Backend backend = requested == Backend::automatic ? (device.cuda ? Backend::nccl : Backend::mpi) : requested;
  if (backend == Backend::nccl && !device.cuda)
    throw InputError("parallel.backend: nccl carries CUDA tensors, but train.device resolved to cpu");
  if (backend == Backend::mpi && device.cuda)
    throw InputError("parallel.backend: mpi carries CPU tensors, but train.device resolved to cuda; use nccl or auto");
  if (backend == Backend::nccl && !parallel::nccl_available())
    throw InputError("parallel.backend: nccl, but this lmforge was built without NCCL");
  return backend;
}

struct TrainInputs {
  trainer::CausalLM model;
  data::PreparedDataset dataset;
  std::shared_ptr<const data::ShardSet> train, eval;  // eval: null when the dataset has no eval rows
  std::unique_ptr<parallel::Grid> grid;          // dp x tp over the training communicator
  std::shared_ptr<trainer::TensorParallel> tp;  // what parallelize() split; null at tp = 1
  std::string run_dir, resume_from;  // resume_from: a verified checkpoint directory, or empty
  std::string base_dir, base_reference;  // a LoRA run's frozen base (trainer/lora.h); empty otherwise
  std::map<std::string, std::string> lineage;
  const data::Tokenizer* tokenizer = nullptr;  // owned by train()
};

// eval.suites at every eval point: results to <run>/eval/<suite>/<step>.json and metrics.jsonl.
std::function<void(int64_t)> eval_suites_hook(const Config& cfg, const TrainInputs& in, RunRecord* record) {
  if (cfg.eval_suites.empty()) return nullptr;
  return [&cfg, &in, record](int64_t step) {
    trainer::InferenceView whole(*in.model);  // under tp: full logits and embedding table while the suites run
    EvalModel m{*in.model, *in.tokenizer, {in.tokenizer->eos_id()}, cfg.model.max_seq_len};
    for (const auto& suite : cfg.eval_suites) {
      // Examples split over the dp axis: the tp ranks of one replica run the same ones together.
      nlohmann::json result = run_eval_suite(suite, m, in.grid->dp(), step);
      if (!record) continue;
      RecordedEval recorded = record_eval_result(record->dir(), result, record);
      std::string text = "eval " + suite.name + " step " + std::to_string(step) + ":";
      for (const auto& [key, value] : recorded.row.items())
        if (value.is_number_float()) text += " " + key.substr(key.find('/', 5) + 1) + " " + std::to_string(value.get<double>());
      log::line(text);
    }
  };
}

void train_loop(const Config& cfg, const TrainInputs& in, RunRecord* record, parallel::Comm& comm, parallel::Comm& control) {
  trainer::TrainerSettings settings;
  settings.train = cfg.train;
  settings.optim = cfg.optim;
  settings.schedule = cfg.schedule;
  settings.eval = cfg.eval;
  settings.checkpoint = cfg.checkpoint;
  settings.bucket_mb = cfg.parallel.bucket_mb;
  settings.zero = cfg.parallel.zero == 1;
  if (in.tp) {
    settings.grid = in.grid.get();
    settings.tp = in.tp;
  }
  settings.control = &control;
  settings.run_dir = in.run_dir;
  settings.lineage = in.lineage;
  settings.base_reference = in.base_reference;
  settings.on_eval = eval_suites_hook(cfg, in, record);
  settings.live_progress = cfg.logging.progress == Progress::always || (cfg.logging.progress == Progress::on_terminal && isatty(2));
  auto sampler = std::make_unique<data::ShardSampler>(in.train, static_cast<uint64_t>(cfg.run.seed));
  std::vector<data::Batch> eval_batches;
  if (in.eval) eval_batches = in.eval->leading_batches(cfg.train.micro_batch_size, cfg.train.micro_batch_size * cfg.eval.max_batches);
  trainer::Trainer trainer(in.model, settings, std::move(sampler), std::move(eval_batches), record, comm);
  if (!in.resume_from.empty()) {
    trainer.load_checkpoint(in.resume_from);
    log::line("resumed from " + in.resume_from + " at step " + std::to_string(trainer.step()), comm.rank() == 0);
  }
  trainer.run();
}

// The model an export writes: under tp a single-device model holding the gathered weights (with
// peft, the base adapted as apply_peft did, then loaded), so the export is the same whatever tp
// was. Collective under tp; null on the ranks other than 0.
trainer::CausalLM export_model(const Config& cfg, const TrainInputs& in) {
  if (!in.tp) return in.model;
  NamedTensors full = in.tp->full_parameters(*in.model);
  if (in.grid->world().rank() != 0) return nullptr;
  trainer::CausalLM model = trainer::build_model(cfg.model);
  if (cfg.peft.enabled()) trainer::apply_lora(*model, trainer::effective_peft_config(cfg.peft));
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters();
  for (const auto& [name, t] : full) params[name].copy_(t);
  return model;
}

// peft: rank 0 saves or names the frozen base and records it as RUN_DIR/base.json; every rank
// adapts its model (the same adapters: the same seed) before any parallelisation.
void apply_peft(const Config& cfg, TrainInputs& in, parallel::Comm& control) {
  const bool is_root = control.rank() == 0;
  on_rank0(control, [&] {
    in.base_dir = trainer::prepare_lora_base(*in.model, cfg.model, in.run_dir);
    in.base_reference = trainer::base_reference(in.base_dir).dump(2);
    std::ofstream(RunDir{in.run_dir}.base_reference()) << in.base_reference << "\n";
  });
  in.base_dir = parallel::broadcast_string(control, in.base_dir, 0);
  in.base_reference = parallel::broadcast_string(control, in.base_reference, 0);
  trainer::LoraSummary summary = cfg.peft.from.empty() ? trainer::apply_lora(*in.model, cfg.peft)
                                                       : trainer::load_peft_adapter(*in.model, cfg.peft.from);
  log::line(std::string("peft ") + trainer::peft_method_name(trainer::effective_peft_config(cfg.peft).method) + " on " + in.base_dir + ": " +
                trainer::describe_trainable(summary),
            is_root);
}

// checkpoint.resume decided on rank 0 (it alone may probe run locks): the unfinished run to
// continue (auto) and the checkpoint to load. Every rank gets the answer, or the same error.
std::pair<std::string, std::string> choose_resume(const Config& cfg, parallel::Comm& control) {
  std::string run, checkpoint;
  on_rank0(control, [&] {
    const auto& c = cfg.checkpoint;
    if (c.resume == "auto") {
      run = find_unfinished_run(cfg.run.output_dir, cfg.run.name);
      if (!run.empty()) checkpoint = trainer::find_latest_checkpoint(RunDir{run}.checkpoints(), c.on_corrupt);
    } else if (c.resume != "never") {
      std::string reason = trainer::verify_checkpoint(c.resume);
      if (!reason.empty()) throw InputError("checkpoint.resume: " + c.resume + ": " + reason);
      checkpoint = c.resume;
    }
  });
  return {parallel::broadcast_string(control, run, 0), parallel::broadcast_string(control, checkpoint, 0)};
}

// The processes of the job: the control communicator (MPI, CPU tensors: configs, hosts, the run
// directory), the device each rank trains on, and the communicator gradients travel on (NCCL's
// when training on GPUs).
struct Processes {
  parallel::LaunchEnv env;
  std::unique_ptr<parallel::Comm> control, nccl;
  parallel::DeviceChoice device;
  parallel::Backend backend = parallel::Backend::mpi;
  int threads = 1;
  std::vector<std::string> hosts;
  parallel::Comm& training() { return nccl ? *nccl : *control; }
};

Processes start_processes() {
  Processes p;
  p.env = parallel::detect_launch_env();
  // OpenMPI aborts inside MPI_Init, with a message about PMI builds, when srun gave it no PMIx.
  if (p.env.launcher == "slurm" && p.env.world_size > 1 && !std::getenv("PMIX_RANK"))
    throw InputError("started by Slurm as task " + std::to_string(p.env.rank) + " of " + std::to_string(p.env.world_size) +
                     " without PMIx, so the tasks cannot form one MPI world: launch with srun --mpi=pmix "
                     "(or MpiDefault=pmix in slurm.conf)");
  p.control = p.env.world_size > 1 ? parallel::make_mpi_world_comm() : parallel::make_self_comm();
  if (p.control->size() != p.env.world_size)
    throw InputError("started by " + p.env.launcher + " as rank " + std::to_string(p.env.rank) + " of " +
                     std::to_string(p.env.world_size) + ", but MPI sees a world of " + std::to_string(p.control->size()) +
                     ": the launcher gave MPI no process information (under Slurm use srun --mpi=pmix)");
  return p;
}

// Layout checks, threads, device and backend for `cfg`, before anything heavy starts.
void configure_processes(Processes& p, const Config& cfg) {
  p.control->set_timeout(cfg.parallel.timeout_s);
  parallel::check_grid_layout(p.control->size(), cfg.parallel.dp, cfg.parallel.tp);
  if (!cfg.model.from.empty()) {  // its config.json sets the sizes tp must divide (load_config checked YAML ones)
    for (const auto& [key, message] : trainer::tp_layout_errors(trainer::read_hf_config(cfg.model.from), cfg.parallel.tp))
      throw InputError("model.from " + cfg.model.from + ": " + message);
  }
  p.threads = parallel::configure_threads(cfg.parallel, p.env, cfg.train.precision == trainer::Precision::bf16);
  p.device = parallel::pick_device(cfg.train.device, p.env.local_rank, p.env.local_size);
  p.backend = resolve_backend(cfg.parallel.backend, p.device);
}

// The model on its device, the hosts gathered, and the training communicator started (collective).
parallel::Comm& place_model(Processes& p, trainer::CausalLMImpl& model, const Config& cfg) {
  if (p.device.cuda) model.to(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(p.device.index)));
  p.hosts = gather_hosts(*p.control);
  if (p.backend == parallel::Backend::nccl && p.control->size() > 1)
    p.nccl = parallel::make_nccl_comm(*p.control, p.device.index, cfg.parallel.timeout_s);
  return p.training();
}

// Rank 0 prepares the dataset; every rank opens its train (and eval) split.
void open_dataset(const Config& cfg, parallel::Comm& control, TrainInputs& in) {
  in.dataset = prepare_on_rank0(cfg, *in.tokenizer, control);
  const int64_t vocab = cfg.model.vocab_size;
  in.train = std::make_shared<data::ShardSet>(in.dataset.dir, "train", vocab, cfg.data.cross_document_attention);
  if (in.train->rows() == 0) throw InputError("data: the training split of dataset " + in.dataset.id + " holds no rows");
  if (in.dataset.summary().eval.rows > 0)
    in.eval = std::make_shared<data::ShardSet>(in.dataset.dir, "eval", vocab, cfg.data.cross_document_attention);
}

// The run directory, new or resumed (checkpoint.resume), on every rank; its record on rank 0 only.
std::optional<RunRecord> open_run(const Config& cfg, parallel::Comm& control, const std::vector<std::string>& argv,
                                  TrainInputs& in) {
  auto [resume_run, resume_from] = choose_resume(cfg, control);
  in.resume_from = resume_from;
  std::optional<RunRecord> record;
  if (control.rank() == 0 && !resume_run.empty()) {
    record.emplace(RunRecord::reopen(resume_run, resume_from.empty() ? 0 : trainer::checkpoint_step(resume_from), argv));
  } else if (control.rank() == 0) {
    record.emplace(RunRecord::create(cfg.run, cfg.resolved_yaml, argv));
    if (!resume_from.empty()) record->set_meta("parent_checkpoint", resume_from);
  }
  in.run_dir = parallel::broadcast_string(control, record ? record->dir() : "", 0);
  if (record && cfg.logging.tensorboard) record->enable_tensorboard();
  log::open_rank_file(RunDir{in.run_dir}.rank_log(control.rank()));
  in.lineage = {{"config_sha256", sha256_hex(cfg.resolved_yaml)}, {"dataset", in.dataset.id},
                {"code_version", code_version_text()}};
  return record;
}

// meta.json's world, datasets and model, and the run's first log line.
void record_start(RunRecord& record, const Config& cfg, const TrainInputs& in, const Processes& p,
                  parallel::Comm& comm, int64_t num_parameters) {
  record.set_meta("world", {{"launcher", p.env.launcher}, {"world_size", comm.size()}, {"dp", in.grid->dp_size()},
                            {"tp", in.grid->tp_size()}, {"backend", comm.backend()}, {"hosts", p.hosts},
                            {"threads", p.threads}, {"device", p.device.cuda ? "cuda" : "cpu"}});
  const data::DatasetManifest manifest = in.dataset.summary();
  auto split_meta = [&](const data::DatasetSplit& split) {
    if (split.rows == 0) return nlohmann::json(nullptr);
    nlohmann::json j = split.summary;
    j["id"] = in.dataset.id;
    return j;
  };
  record.set_meta("datasets", {{"id", in.dataset.id}, {"dir", in.dataset.dir}, {"reused", in.dataset.reused},
                               {"train", split_meta(manifest.train)}, {"eval", split_meta(manifest.eval)},
                               {"templates", manifest.templates}});
  record.set_meta("model", {{"arch", cfg.model.arch}, {"parameters", num_parameters}});
  log::line("run " + record.dir() + ": " + cfg.model.arch + " model, " + std::to_string(num_parameters) +
            " parameters, " + std::to_string(manifest.train.tokens) + " train tokens, " +
            std::to_string(comm.size()) + " ranks (dp " + std::to_string(in.grid->dp_size()) + " x tp " +
            std::to_string(in.grid->tp_size()) + ") x " + std::to_string(p.threads) + " threads, " + comm.backend());
}

// Rank 0's training and export, the run's final status recorded whatever happens.
void train_and_export(const Config& cfg, const TrainInputs& in, RunRecord& record, parallel::Comm& comm,
                      parallel::Comm& control) {
  try {
    train_loop(cfg, in, &record, comm, control);
    if (cfg.peft.enabled()) {
      trainer::save_lora_run_export(*export_model(cfg, in), cfg.model, cfg.peft, in.base_dir, record.dir());
    } else {
      trainer::save_run_export(*export_model(cfg, in), cfg.model, record.dir());
    }
    // The tokenizer the run trained with, so the export is a complete HF model directory.
    data::TokenizerConfig source = cfg.tokenizer;
    if (!cfg.model.from.empty() && data::tokenizer_of_model_dir(cfg.model.from).kind != "byte")
      source = data::tokenizer_of_model_dir(cfg.model.from);  // make_config_tokenizer read it from there
    data::save_hf_tokenizer_files(source, *in.tokenizer, record.files().export_dir());
  } catch (const Preempted& e) {
    record.finish("interrupted", e.what());
    throw;
  } catch (const CheckpointError& e) {
    record.finish("interrupted", e.what());  // resume: auto continues from the last committed checkpoint
    throw;
  } catch (const std::exception& e) {
    record.finish("failed", e.what());
    throw;
  }
  record.finish("completed");
  write_model_card(record.dir(), record.files().export_dir());
}

}  // namespace

std::string run_train_job(const std::string& config_path, const std::vector<std::string>& sets,
                          const std::vector<std::string>& argv) {
  Processes processes = start_processes();
  Config cfg = load_config_on_every_rank(*processes.control, config_path, sets);
  configure_processes(processes, cfg);
  TrainInputs in;
  std::unique_ptr<data::Tokenizer> tokenizer = make_config_tokenizer(cfg);
  in.tokenizer = tokenizer.get();
  open_dataset(cfg, *processes.control, in);
  std::optional<RunRecord> record = open_run(cfg, *processes.control, argv, in);
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  in.model = trainer::build_model(cfg.model);  // initialised on the CPU: the same on every device
  if (cfg.peft.enabled()) apply_peft(cfg, in, *processes.control);
  parallel::Comm& comm = place_model(processes, *in.model, cfg);
  const int64_t num_parameters = in.model->num_parameters();  // of the whole model, before any split
  in.grid = std::make_unique<parallel::Grid>(comm, cfg.parallel.dp, cfg.parallel.tp);
  if (cfg.parallel.tp > 1) in.tp = trainer::parallelize(*in.model, *in.grid);
  if (!record) {
    train_loop(cfg, in, nullptr, comm, *processes.control);
    export_model(cfg, in);  // collective under tp
    return "";
  }
  record_start(*record, cfg, in, processes, comm, num_parameters);
  train_and_export(cfg, in, *record, comm, *processes.control);
  return record->dir();
}

}  // namespace lmforge::experiments
