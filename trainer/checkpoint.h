// trainer/checkpoint.h -- the checkpoint protocol: atomic multi-rank commit with a verified
// manifest, retention, and finding the newest valid checkpoint. What state goes in is the trainer's.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/safetensors.h"

namespace lmforge::config {
class Section;
}
namespace lmforge::parallel {
class Comm;
}

namespace lmforge::trainer {

enum class OnCorrupt { fallback, error };  // checkpoint.on_corrupt

struct CheckpointConfig {
  bool save_final = true;               // model.safetensors in the run directory and a final checkpoint
  int64_t every_steps = 0;              // 0: only the final and preemption checkpoints
  int64_t keep_last = 3;                // older ones are deleted; enough to survive one corrupt save
  int64_t keep_every = 0;               // also keep steps that are multiples of this; 0: none
  std::string resume = "auto";          // auto: continue the newest unfinished run of run.name | never | PATH
  OnCorrupt on_corrupt = OnCorrupt::fallback;  // fallback: use the previous valid checkpoint | error: exit 2
};
void read_checkpoint_config(config::Section& s, CheckpointConfig& c);

// The files one rank contributes to a checkpoint (names relative to the checkpoint directory).
struct CheckpointFiles {
  std::map<std::string, NamedTensors> tensors;  // written as safetensors
  std::map<std::string, std::string> texts;     // written as they are (JSON)
};

constexpr int kCheckpointFormatVersion = 1;

// The names of a checkpoint's files, in one place.
namespace checkpoint_file {
inline const std::string kModel = "model.safetensors";          // weights (a LoRA run: its trainable ones)
inline const std::string kOptimizer = "optimizer.safetensors";  // AdamW moments, full tensors
inline const std::string kTrainerState = "trainer_state.json";  // counters, sampler, layout
inline const std::string kBase = "base.json";                   // a LoRA run's frozen base
inline const std::string kManifest = "manifest.json";           // sizes and SHA-256 of every file, lineage
inline const std::string kLatest = "latest";                    // beside the step_N directories: the newest
std::string optimizer_shard(int rank);                          // ZeRO-1: rank's optimizer shard
std::string rng(int rank);                                      // rank's generator states
}  // namespace checkpoint_file

// What one rank contributes to a checkpoint while components save: its files, and (rank 0's)
// the fields of trainer_state.json.
struct CheckpointState {
  int rank = 0;
  CheckpointFiles files;
  nlohmann::json trainer_state = nlohmann::json::object();
};

// A part of the training state that saves and restores itself: weights, optimizer state (the
// strategy), sampler, generators, counters. save() is collective when the part gathers tensors;
// load() reads `dir`, with trainer_state.json already parsed.
class CheckpointComponent {
 public:
  virtual ~CheckpointComponent() = default;
  virtual void save(CheckpointState& out) = 0;
  virtual void load(const std::string& dir, const nlohmann::json& trainer_state) = 0;
};

// Collective over `comm`. Every rank writes `mine` into <dir>/step_N.tmp/ (fsynced); the ranks
// agree that all writes succeeded; rank 0 writes manifest.json (format version, step, per-file
// size and SHA-256, plus `lineage`), renames the directory to step_N and then replaces `latest`.
// Retention runs after the commit and never touches the new checkpoint. A failed write on any
// rank removes the temp directory on rank 0 and throws on every rank. Returns the final path.
std::string commit_checkpoint(const std::string& dir, int64_t step, const CheckpointFiles& mine,
                              const std::map<std::string, std::string>& lineage, const CheckpointConfig& cfg,
                              parallel::Comm& comm);

// Checks a checkpoint directory against its manifest (every file present, sizes and SHA-256
// equal). Returns "" when valid, otherwise the reason.
std::string verify_checkpoint(const std::string& checkpoint_dir);

// The newest step_N under `dir` whose manifest verifies; "" when there is none. Corrupt newer
// ones (and a `latest` that names no valid checkpoint) are reported on stderr by name; with
// on_corrupt = error the first corrupt one throws InputError instead.
std::string find_latest_checkpoint(const std::string& dir, OnCorrupt on_corrupt);

// The step recorded in a verified checkpoint's manifest.
int64_t checkpoint_step(const std::string& checkpoint_dir);

}  // namespace lmforge::trainer
