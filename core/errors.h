// core/errors.h -- the exception types that decide lmforge's exit codes.
// InputError (bad config, data or CLI usage) exits 2; Preempted 3; TrainingError 1.
#pragma once

#include <stdexcept>
#include <string>

namespace lmforge {

// The user's input is wrong (a file, a key, a value). The message names it. Exit code 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// SIGTERM or SIGUSR1 asked the run to stop; a checkpoint was saved. Exit code 3: requeue me.
struct Preempted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Training cannot go on (non-finite loss or gradient norm). Exit code 1.
struct TrainingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A checkpoint could not be written (disk full, I/O error) and nothing was committed. Exit 1;
// the run stays resumable from its previous checkpoint.
struct CheckpointError : TrainingError {
  using TrainingError::TrainingError;
};

}  // namespace lmforge
