// experiments/train_job.h -- `lmforge train` as a library call: the train flow from a config file to
// a finished run directory (config -> data -> model -> PEFT -> parallelize -> trainer -> export).
#pragma once

#include <string>
#include <vector>

namespace lmforge::experiments {

// Runs the whole job on this rank (collective over every rank the launcher started). Returns the
// run directory on rank 0 ("" elsewhere). Throws InputError (bad config or data), Preempted (a
// signal: checkpoint saved, the run marked interrupted), CheckpointError or TrainingError.
std::string run_train_job(const std::string& config_path, const std::vector<std::string>& sets,
                          const std::vector<std::string>& argv);

}  // namespace lmforge::experiments
