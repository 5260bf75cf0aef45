// launch/main.cpp -- the lmforge CLI: sub-commands, exit codes, and the train flow's wiring.
// The only main(). Work is done by the library; this file only orders it.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "data/hf_tokenizer.h"
#include "data/pipeline.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "experiments/eval_suite.h"
#include "experiments/run_record.h"
#include "experiments/runs.h"
#include "launch/data_commands.h"
#include "launch/eval_command.h"
#include "launch/hf_commands.h"
#include "parallel/comm.h"
#include "parallel/grid.h"
#include "parallel/launcher.h"
#include "parallel/tensor_parallel.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"
#include "trainer/hf_model.h"
#include "core/log.h"
#include "trainer/lora.h"
#include "trainer/trainer.h"

namespace {

using namespace lmforge;

constexpr int kExitOk = 0, kExitFailure = 1, kExitBadInput = 2, kExitPreempted = 3;

// The tokenizer training uses: an HF directory's own wins over tokenizer.kind (its ids are the ones
// the weights know).
std::unique_ptr<data::Tokenizer> training_tokenizer(const Config& cfg) {
  std::unique_ptr<data::Tokenizer> tokenizer = cfg.model.from.empty() ? nullptr : data::load_hf_tokenizer(cfg.model.from);
  return tokenizer ? std::move(tokenizer) : data::make_tokenizer(cfg.tokenizer);
}

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
std::string resolve_backend(const std::string& requested, const parallel::DeviceChoice& device) {
  std::string backend = requested == "auto" ? (device.cuda ? "nccl" : "mpi") : requested;
  if (backend == "nccl" && !device.cuda)
    throw InputError("parallel.backend: nccl carries CUDA tensors, but train.device resolved to cpu");
  if (backend == "mpi" && device.cuda)
    throw InputError("parallel.backend: mpi carries CPU tensors, but train.device resolved to cuda; use nccl or auto");
  if (backend == "nccl" && !parallel::nccl_available())
    throw InputError("parallel.backend: nccl, but this lmforge was built without NCCL");
  return backend;
}

struct TrainInputs {
  trainer::CausalLM model;
  data::PreparedDataset dataset;
  std::shared_ptr<const data::ShardSet> train, eval;  // eval: null when the dataset has no eval rows
  std::unique_ptr<parallel::Grid> grid;          // dp x tp over the training communicator
  std::shared_ptr<parallel::TensorParallel> tp;  // what parallelize() split; null at tp = 1
  std::string run_dir, resume_from;  // resume_from: a verified checkpoint directory, or empty
  std::string base_dir, base_reference;  // a LoRA run's frozen base (trainer/lora.h); empty otherwise
  std::map<std::string, std::string> lineage;
  const data::Tokenizer* tokenizer = nullptr;  // owned by train()
};

// eval.suites at every eval point: results to <run>/eval/<suite>/<step>.json and metrics.jsonl.
std::function<void(int64_t)> eval_suites_hook(const Config& cfg, const TrainInputs& in, experiments::RunRecord* record) {
  if (cfg.eval_suites.empty()) return nullptr;
  return [&cfg, &in, record](int64_t step) {
    parallel::InferenceView whole(*in.model);  // under tp: full logits and embedding table while the suites run
    experiments::EvalModel m{*in.model, *in.tokenizer, {in.tokenizer->eos_id()}, cfg.model.max_seq_len};
    for (const auto& suite : cfg.eval_suites) {
      // Examples split over the dp axis: the tp ranks of one replica run the same ones together.
      nlohmann::json result = experiments::run_eval_suite(suite, m, in.grid->dp(), step);
      if (!record) continue;
      experiments::write_eval_result(record->dir(), result);
      nlohmann::json row = experiments::eval_metrics_row(result);
      record->append_metrics(row);
      std::string text = "eval " + suite.name + " step " + std::to_string(step) + ":";
      for (const auto& [key, value] : row.items())
        if (value.is_number_float()) text += " " + key.substr(key.find('/', 5) + 1) + " " + std::to_string(value.get<double>());
      log::line(text);
    }
  };
}

int train_loop(const Config& cfg, const TrainInputs& in, experiments::RunRecord* record, parallel::Comm& comm) {
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
  settings.run_dir = in.run_dir;
  settings.lineage = in.lineage;
  settings.base_reference = in.base_reference;
  settings.on_eval = eval_suites_hook(cfg, in, record);
  settings.live_progress = cfg.logging.progress == "always" || (cfg.logging.progress == "auto" && isatty(2));
  auto sampler = std::make_unique<data::ShardSampler>(in.train, static_cast<uint64_t>(cfg.run.seed));
  std::vector<data::Batch> eval_batches;
  if (in.eval) eval_batches = in.eval->leading_batches(cfg.train.micro_batch_size, cfg.train.micro_batch_size * cfg.eval.max_batches);
  trainer::Trainer trainer(in.model, settings, std::move(sampler), std::move(eval_batches), record, comm);
  if (!in.resume_from.empty()) {
    trainer.load_checkpoint(in.resume_from);
    log::line("resumed from " + in.resume_from + " at step " + std::to_string(trainer.step()), comm.rank() == 0);
  }
  trainer.run();
  return kExitOk;
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
    std::ofstream(in.run_dir + "/base.json") << in.base_reference << "\n";
  });
  in.base_dir = parallel::broadcast_string(control, in.base_dir, 0);
  in.base_reference = parallel::broadcast_string(control, in.base_reference, 0);
  trainer::LoraSummary summary = cfg.peft.from.empty() ? trainer::apply_lora(*in.model, cfg.peft)
                                                       : trainer::load_peft_adapter(*in.model, cfg.peft.from);
  log::line("peft " + trainer::effective_peft_config(cfg.peft).method + " on " + in.base_dir + ": " +
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
      run = experiments::find_unfinished_run(cfg.run.output_dir, cfg.run.name);
      if (!run.empty()) checkpoint = trainer::find_latest_checkpoint(run + "/checkpoints", c.on_corrupt);
    } else if (c.resume != "never") {
      std::string reason = trainer::verify_checkpoint(c.resume);
      if (!reason.empty()) throw InputError("checkpoint.resume: " + c.resume + ": " + reason);
      checkpoint = c.resume;
    }
  });
  return {parallel::broadcast_string(control, run, 0), parallel::broadcast_string(control, checkpoint, 0)};
}

int train(const std::string& config_path, const std::vector<std::string>& sets,
          const std::vector<std::string>& argv) {
  parallel::LaunchEnv env = parallel::detect_launch_env();
  // OpenMPI aborts inside MPI_Init, with a message about PMI builds, when srun gave it no PMIx.
  if (env.launcher == "slurm" && env.world_size > 1 && !std::getenv("PMIX_RANK"))
    throw InputError("started by Slurm as task " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                     " without PMIx, so the tasks cannot form one MPI world: launch with srun --mpi=pmix "
                     "(or MpiDefault=pmix in slurm.conf)");
  // The control communicator (MPI, CPU tensors) checks configs, gathers hosts and carries the run
  // directory; gradients travel on `comm`, which is NCCL's when training on GPUs.
  std::unique_ptr<parallel::Comm> control =
      env.world_size > 1 ? parallel::make_mpi_world_comm() : parallel::make_self_comm();
  if (control->size() != env.world_size)
    throw InputError("started by " + env.launcher + " as rank " + std::to_string(env.rank) + " of " +
                     std::to_string(env.world_size) + ", but MPI sees a world of " + std::to_string(control->size()) +
                     ": the launcher gave MPI no process information (under Slurm use srun --mpi=pmix)");
  Config cfg = load_config_on_every_rank(*control, config_path, sets);
  control->set_timeout(cfg.parallel.timeout_s);
  parallel::check_grid_layout(control->size(), cfg.parallel.dp, cfg.parallel.tp);
  if (!cfg.model.from.empty()) {  // its config.json sets the sizes tp must divide (load_config checked YAML ones)
    for (const auto& [key, message] : parallel::tp_layout_errors(trainer::read_hf_config(cfg.model.from), cfg.parallel.tp))
      throw InputError("model.from " + cfg.model.from + ": " + message);
  }
  int threads = parallel::configure_threads(cfg.parallel, env, cfg.train.precision == "bf16");
  parallel::DeviceChoice device = parallel::pick_device(cfg.train.device, env.local_rank);
  std::string backend = resolve_backend(cfg.parallel.backend, device);

  TrainInputs in;
  std::unique_ptr<data::Tokenizer> tokenizer = training_tokenizer(cfg);
  in.tokenizer = tokenizer.get();
  in.dataset = prepare_on_rank0(cfg, *tokenizer, *control);
  const int64_t vocab = cfg.model.vocab_size;
  in.train = std::make_shared<data::ShardSet>(in.dataset.dir, "train", vocab, cfg.data.cross_document_attention);
  if (in.train->rows() == 0) throw InputError("data: the training split of dataset " + in.dataset.id + " holds no rows");
  if (in.dataset.manifest["splits"]["eval"]["rows"].get<int64_t>() > 0)
    in.eval = std::make_shared<data::ShardSet>(in.dataset.dir, "eval", vocab, cfg.data.cross_document_attention);
  auto [resume_run, resume_from] = choose_resume(cfg, *control);
  in.resume_from = resume_from;

  const bool is_root = control->rank() == 0;
  std::optional<experiments::RunRecord> record;
  if (is_root && !resume_run.empty()) {
    record.emplace(experiments::RunRecord::reopen(
        resume_run, resume_from.empty() ? 0 : trainer::checkpoint_step(resume_from), argv));
  } else if (is_root) {
    record.emplace(experiments::RunRecord::create(cfg.run, cfg.resolved_yaml, argv));
    if (!resume_from.empty()) record->set_meta("parent_checkpoint", resume_from);
  }
  in.run_dir = parallel::broadcast_string(*control, is_root ? record->dir() : "", 0);
  if (is_root && cfg.logging.tensorboard) record->enable_tensorboard();
  log::open_rank_file(in.run_dir + "/logs/rank_" + std::to_string(control->rank()) + ".log");
  in.lineage = {{"config_sha256", sha256_hex(cfg.resolved_yaml)}, {"dataset", in.dataset.id}, {"code_version", experiments::code_version_text()}};
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  in.model = trainer::build_model(cfg.model);  // initialised on the CPU: the same on every device
  if (cfg.peft.enabled()) apply_peft(cfg, in, *control);
  if (device.cuda) in.model->to(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device.index)));
  std::vector<std::string> hosts = gather_hosts(*control);  // collective: every rank calls it
  std::unique_ptr<parallel::Comm> nccl;
  if (backend == "nccl" && control->size() > 1)
    nccl = parallel::make_nccl_comm(*control, device.index, cfg.parallel.timeout_s);
  parallel::Comm& comm = nccl ? *nccl : *control;
  const int64_t num_parameters = in.model->num_parameters();  // of the whole model, before any split
  in.grid = std::make_unique<parallel::Grid>(comm, cfg.parallel.dp, cfg.parallel.tp);
  if (cfg.parallel.tp > 1) in.tp = parallel::parallelize(*in.model, *in.grid);
  if (!is_root) {
    train_loop(cfg, in, nullptr, comm);
    export_model(cfg, in);  // collective under tp
    return kExitOk;
  }
  record->set_meta("world", {{"launcher", env.launcher}, {"world_size", comm.size()}, {"dp", in.grid->dp_size()},
                             {"tp", in.grid->tp_size()},
                             {"backend", comm.backend()}, {"hosts", hosts}, {"threads", threads},
                             {"device", device.cuda ? "cuda" : "cpu"}});
  const auto& splits = in.dataset.manifest["splits"];
  auto split_meta = [&](const char* split) {
    if (splits[split]["rows"].get<int64_t>() == 0) return nlohmann::json(nullptr);
    nlohmann::json j = splits[split];
    j.erase("shards");
    j["id"] = in.dataset.id;
    return j;
  };
  record->set_meta("datasets", {{"id", in.dataset.id}, {"dir", in.dataset.dir}, {"reused", in.dataset.reused},
                                {"train", split_meta("train")}, {"eval", split_meta("eval")},
                                {"templates", in.dataset.manifest["templates"]}});
  record->set_meta("model", {{"arch", cfg.model.arch}, {"parameters", num_parameters}});
  log::line("run " + record->dir() + ": " + cfg.model.arch + " model, " + std::to_string(num_parameters) +
            " parameters, " + splits["train"]["tokens"].dump() + " train tokens, " +
            std::to_string(comm.size()) + " ranks (dp " + std::to_string(in.grid->dp_size()) + " x tp " +
            std::to_string(in.grid->tp_size()) + ") x " + std::to_string(threads) + " threads, " + comm.backend());
  try {
    train_loop(cfg, in, &*record, comm);
    if (cfg.peft.enabled()) {
      trainer::save_lora_run_export(*export_model(cfg, in), cfg.model, cfg.peft, in.base_dir, record->dir());
    } else {
      trainer::save_run_export(*export_model(cfg, in), cfg.model, record->dir());
    }
  } catch (const Preempted& e) {
    record->finish("interrupted", e.what());
    throw;
  } catch (const CheckpointError& e) {
    record->finish("interrupted", e.what());  // resume: auto continues from the last committed checkpoint
    throw;
  } catch (const std::exception& e) {
    record->finish("failed", e.what());
    throw;
  }
  record->finish("completed");
  experiments::write_model_card(record->dir(), record->dir() + "/export");
  std::printf("%s\n", record->dir().c_str());
  return kExitOk;
}

int config_command(bool show, const std::string& path, const std::vector<std::string>& sets) {
  Config cfg = load_config(path, sets);
  if (show) {
    std::cout << cfg.resolved_yaml;
  } else {
    std::cout << path << ": ok\n";
  }
  return kExitOk;
}

int data_prepare_command(const std::string& path, const std::vector<std::string>& sets) {
  Config cfg = load_config(path, sets);
  auto tokenizer = training_tokenizer(cfg);
  auto prepared = data::prepare_dataset(cfg.data, *tokenizer, {cfg.train.seq_len, static_cast<uint64_t>(cfg.run.seed)});
  const auto& m = prepared.manifest;
  nlohmann::json summary = {{"dataset_id", prepared.id}, {"dir", prepared.dir}, {"reused", prepared.reused},
                            {"train_rows", m["splits"]["train"]["rows"]}, {"eval_rows", m["splits"]["eval"]["rows"]},
                            {"stats", m["stats"]}};
  std::cout << summary.dump(2) << "\n";
  return kExitOk;
}

// One record as the model will see it: each segment with whether it is trained on, then its tokens.
int data_inspect_command(const std::string& path, const std::vector<std::string>& sets, int64_t index) {
  Config cfg = load_config(path, sets);
  auto tokenizer = training_tokenizer(cfg);
  auto records = data::read_records(cfg.data, index + 1, tokenizer.get());
  if (index >= static_cast<int64_t>(records.size()))
    throw InputError("data inspect: --record " + std::to_string(index) + " but the sources hold " +
                     std::to_string(records.size()) + " records");
  const auto& r = records[index];
  std::cout << "record " << index << " (" << r.where << ")\n";
  for (const auto& seg : r.segments) {
    std::cout << (seg.trained ? "--- trained ---\n" : "--- no loss (prompt) ---\n") << seg.text << "\n";
  }
  std::cout << "--- tokens: id, loss, text ---\n";
  for (const auto& seg : r.segments) {
    for (int32_t id : r.rendered ? tokenizer->encode_rendered(seg.text) : tokenizer->encode(seg.text)) {
      nlohmann::json piece = tokenizer->decode({id});
      std::cout << id << "\t" << (seg.trained ? "1" : "0") << "\t" << piece.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lmforge: train and fine-tune decoder-only language models"};
  app.require_subcommand(1);
  std::vector<std::string> args(argv, argv + argc);

  std::string config_path;
  std::vector<std::string> sets;
  auto add_config_args = [&](CLI::App* cmd) {
    cmd->add_option("config", config_path, "YAML config file")->required();
    cmd->add_option("--set", sets, "override a key: --set train.max_steps=100 (repeatable)")
        ->allow_extra_args(false)
        ->take_all();
  };
  CLI::App* train_cmd = app.add_subcommand("train", "train a model from a config");
  add_config_args(train_cmd);
  CLI::App* config_cmd = app.add_subcommand("config", "check or print a config");
  config_cmd->require_subcommand(1);
  CLI::App* validate_cmd = config_cmd->add_subcommand("validate", "validate a config; exit 2 on any error");
  add_config_args(validate_cmd);
  CLI::App* show_cmd = config_cmd->add_subcommand("show", "print the resolved config (defaults included)");
  add_config_args(show_cmd);
  CLI::App* data_cmd = app.add_subcommand("data", "the data pipeline: prepare shards, inspect records");
  data_cmd->require_subcommand(1);
  CLI::App* prepare_cmd = data_cmd->add_subcommand("prepare", "tokenize the config's sources into HDF5 shards + manifest");
  add_config_args(prepare_cmd);
  CLI::App* inspect_cmd = data_cmd->add_subcommand("inspect", "show one record with its loss mask");
  add_config_args(inspect_cmd);
  int64_t record_index = 0;
  inspect_cmd->add_option("--record", record_index, "record number, from 0 (default 0)")->check(CLI::NonNegativeNumber);
  CLI::App* version_cmd = app.add_subcommand("version", "print versions");
  CLI::App* runs_cmd = app.add_subcommand("runs", "the run registry: list, show, diff");
  runs_cmd->require_subcommand(1);
  std::string output_dir = "runs", run_a, run_b;
  CLI::App* runs_list = runs_cmd->add_subcommand("list", "every run: id, name, status, steps, final losses");
  CLI::App* runs_show = runs_cmd->add_subcommand("show", "one run: meta, final metrics, checkpoints");
  runs_show->add_option("run", run_a, "run directory or run id")->required();
  CLI::App* runs_diff = runs_cmd->add_subcommand("diff", "two runs side by side: config, data, code, metrics");
  runs_diff->add_option("run_a", run_a, "run directory or run id")->required();
  runs_diff->add_option("run_b", run_b, "run directory or run id")->required();
  for (CLI::App* sub : {runs_list, runs_show, runs_diff})
    sub->add_option("--output-dir", output_dir, "root of run directories (run.output_dir; default runs)");
  auto hf_commands = launch::add_hf_commands(app);
  auto data_commands = launch::add_data_commands(app);
  auto eval_commands = launch::add_eval_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }
  try {
    if (*train_cmd) return train(config_path, sets, args);
    if (*validate_cmd) return config_command(false, config_path, sets);
    if (*show_cmd) return config_command(true, config_path, sets);
    if (*prepare_cmd) return data_prepare_command(config_path, sets);
    if (*inspect_cmd) return data_inspect_command(config_path, sets, record_index);
    if (*runs_list) std::cout << experiments::list_runs(output_dir);
    if (*runs_show) std::cout << experiments::show_run(experiments::resolve_run(run_a, output_dir));
    if (*runs_diff)
      std::cout << experiments::diff_runs(experiments::resolve_run(run_a, output_dir),
                                          experiments::resolve_run(run_b, output_dir));
    if (*runs_cmd) return kExitOk;
    if (int code = launch::run_hf_command(*hf_commands); code >= 0) return code;
    if (int code = launch::run_data_command(*data_commands); code >= 0) return code;
    if (int code = launch::run_eval_command(*eval_commands); code >= 0) return code;
    if (*version_cmd) {
      std::printf("lmforge 0.1.0 (LibTorch %s)\n", TORCH_VERSION);
      return kExitOk;
    }
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "%s", e.what());  // already one "file:line:col: error: ..." line per problem
    return kExitBadInput;
  } catch (const InputError& e) {
    log::line(std::string("error: ") + e.what());
    return kExitBadInput;
  } catch (const Preempted& e) {
    log::line(std::string("interrupted: ") + e.what() + " (exit 3: requeue to resume)");
    return kExitPreempted;
  } catch (const std::exception& e) {
    log::line(std::string("error: ") + e.what());
    return kExitFailure;
  }
  return kExitFailure;
}
