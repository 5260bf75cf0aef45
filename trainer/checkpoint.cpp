// trainer/checkpoint.cpp -- step_N.tmp -> agree -> manifest -> rename -> latest, verification,
// retention and fault-injection points. Which tensors a checkpoint holds is decided in trainer.cpp.
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "parallel/comm.h"
#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"
#include "core/log.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lmforge::trainer {

std::string checkpoint_file::optimizer_shard(int rank) { return "optimizer.rank_" + std::to_string(rank) + ".safetensors"; }
std::string checkpoint_file::rng(int rank) { return "rng.rank_" + std::to_string(rank) + ".safetensors"; }

void read_checkpoint_config(config::Section& s, CheckpointConfig& c) {
  s.field("save_final", c.save_final);
  s.field("every_steps", c.every_steps, config::at_least(0));
  s.field("keep_last", c.keep_last, config::at_least(1));
  s.field("keep_every", c.keep_every, config::at_least(0));
  s.field("resume", c.resume);
  s.choice("on_corrupt", c.on_corrupt, {{"fallback", OnCorrupt::fallback}, {"error", OnCorrupt::error}});
}

namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

// Tests kill the process at a named stage of a save (LMFORGE_FAULT_INJECT=stage, optionally
// LMFORGE_FAULT_RANK=r) to prove that no stage leaves a valid-looking broken checkpoint.
void fault_point(const char* stage, int rank) {
  const char* want = std::getenv("LMFORGE_FAULT_INJECT");
  if (!want || std::string(want) != stage) return;
  const char* want_rank = std::getenv("LMFORGE_FAULT_RANK");
  if (want_rank && std::atoi(want_rank) != rank) return;
  std::raise(SIGKILL);
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path + " to fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error("fsync failed on " + path);
}

void write_text_synced(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + path);
  }
  fsync_path(path);
}

// Steps of the committed checkpoints under `dir`, newest first.
std::vector<int64_t> committed_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("step_", 0) != 0 || name.find('.') != std::string::npos) continue;
    char* end = nullptr;
    long long step = std::strtoll(name.c_str() + 5, &end, 10);
    if (*end == '\0') steps.push_back(step);
  }
  std::sort(steps.rbegin(), steps.rend());
  return steps;
}

void apply_retention(const std::string& dir, int64_t newest, const CheckpointConfig& cfg) {
  int64_t kept = 0;
  for (int64_t step : committed_steps(dir)) {
    bool keep = step == newest || ++kept <= cfg.keep_last || (cfg.keep_every > 0 && step % cfg.keep_every == 0);
    if (step == newest) ++kept;
    if (keep) continue;
    std::error_code ec;
    fs::remove_all(fs::path(dir) / step_name(step), ec);
    if (ec) log::line("warning: could not delete old checkpoint " + step_name(step) + ": " + ec.message());
  }
}

}  // namespace

std::string commit_checkpoint(const std::string& dir, int64_t step, const CheckpointFiles& mine,
                              const std::map<std::string, std::string>& lineage, const CheckpointConfig& cfg,
                              parallel::Comm& comm) {
  const fs::path final_dir = fs::path(dir) / step_name(step);
  const fs::path tmp_dir = fs::path(dir) / (step_name(step) + ".tmp");
  const int rank = comm.rank();
  std::string error;
  if (rank == 0) {
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);  // a save killed earlier at this step
    fs::create_directories(tmp_dir, ec);
    if (ec) error = "cannot create " + tmp_dir.string() + ": " + ec.message();
  }
  comm.barrier();
  if (error.empty() && !fs::is_directory(tmp_dir)) error = tmp_dir.string() + " is not visible on this rank";
  if (error.empty()) {
    try {
      for (const auto& [name, tensors] : mine.tensors) save_safetensors((tmp_dir / name).string(), tensors);
      for (const auto& [name, text] : mine.texts) write_text_synced((tmp_dir / name).string(), text);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  fault_point("after_files", rank);
  // Every rank learns whether every write succeeded: a full disk on one rank fails them all.
  auto failed = torch::tensor({error.empty() ? 0.0 : 1.0}, torch::kDouble);
  comm.allreduce(failed, parallel::ReduceOp::max);
  if (failed.item<double>() > 0) {
    if (rank == 0) {
      std::error_code ec;
      fs::remove_all(tmp_dir, ec);
    }
    throw CheckpointError("checkpoint at step " + std::to_string(step) + " failed" +
                        (error.empty() ? " on another rank" : ": " + error) + "; nothing was committed");
  }
  if (rank == 0) {
    try {
      json files = json::object();
      for (const auto& e : fs::directory_iterator(tmp_dir)) {
        std::string name = e.path().filename().string();
        files[name] = {{"size", fs::file_size(e.path())}, {"sha256", sha256_file(e.path().string())}};
      }
      json manifest = {{"format_version", kCheckpointFormatVersion}, {"step", step}, {"world_size", comm.size()},
                       {"files", files}};
      for (const auto& [k, v] : lineage) manifest[k] = v;
      fault_point("before_manifest", rank);
      write_text_synced((tmp_dir / checkpoint_file::kManifest).string(), manifest.dump(2) + "\n");
      fsync_path(tmp_dir.string());
      fault_point("after_manifest", rank);
      std::error_code ec;
      fs::remove_all(final_dir, ec);  // a committed checkpoint of the same step (a resumed run re-saving it)
      fs::rename(tmp_dir, final_dir);
      fsync_path(dir);
      fault_point("after_rename", rank);
      write_file_atomic((fs::path(dir) / checkpoint_file::kLatest).string(), step_name(step) + "\n");
      apply_retention(dir, step, cfg);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  auto commit_failed = torch::tensor({error.empty() ? 0.0 : 1.0}, torch::kDouble);
  comm.allreduce(commit_failed, parallel::ReduceOp::max);
  if (commit_failed.item<double>() > 0)
    throw CheckpointError("checkpoint at step " + std::to_string(step) + " could not be committed" +
                        (error.empty() ? " by rank 0" : ": " + error));
  return final_dir.string();
}

std::string verify_checkpoint(const std::string& checkpoint_dir) {
  const fs::path d(checkpoint_dir);
  std::ifstream in(d / checkpoint_file::kManifest);
  if (!in) return "no manifest.json";
  json manifest;
  try {
    manifest = json::parse(in);
  } catch (const std::exception& e) {
    return std::string("manifest.json is not valid JSON (") + e.what() + ")";
  }
  if (!manifest.is_object() || manifest.value("format_version", 0) != kCheckpointFormatVersion ||
      !manifest.contains("files") || !manifest["files"].is_object() || !manifest.contains("step"))
    return "manifest.json lacks format_version " + std::to_string(kCheckpointFormatVersion) + ", step or files";
  for (const auto& [name, info] : manifest["files"].items()) {
    fs::path f = d / name;
    std::error_code ec;
    auto size = fs::file_size(f, ec);
    if (ec) return name + " is missing";
    if (!info.is_object() || size != info.value("size", uint64_t(0)))
      return name + " has " + std::to_string(size) + " bytes, the manifest says " + info.value("size", json()).dump();
    if (sha256_file(f.string()) != info.value("sha256", std::string()))
      return name + " does not match its SHA-256 in the manifest (corrupted)";
  }
  return "";
}

int64_t checkpoint_step(const std::string& checkpoint_dir) {
  std::ifstream in(fs::path(checkpoint_dir) / checkpoint_file::kManifest);
  return json::parse(in).at("step").get<int64_t>();
}

std::string find_latest_checkpoint(const std::string& dir, OnCorrupt on_corrupt) {
  std::ifstream latest_in(fs::path(dir) / checkpoint_file::kLatest);
  std::string latest;
  if (latest_in) std::getline(latest_in, latest);
  // No `latest` at all is not a fault: a run killed before its first commit has none.
  bool latest_ok = !fs::exists(fs::path(dir) / checkpoint_file::kLatest);
  for (int64_t step : committed_steps(dir)) {
    std::string path = (fs::path(dir) / step_name(step)).string();
    std::string reason = verify_checkpoint(path);
    if (reason.empty()) {
      if (!latest_ok && latest != step_name(step))
        log::line("warning: " + (fs::path(dir) / checkpoint_file::kLatest).string() + " names '" + latest +
                  "', not the newest valid checkpoint; using " + path);
      return path;
    }
    if (on_corrupt == OnCorrupt::error)
      throw InputError("checkpoint " + path + " is corrupt: " + reason + " (checkpoint.on_corrupt: error)");
    log::line("warning: checkpoint " + path + " is corrupt: " + reason + "; trying the previous one");
    if (latest == step_name(step)) latest_ok = true;  // reported already
  }
  return "";
}

}  // namespace lmforge::trainer
