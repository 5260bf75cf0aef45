// trainer/errors.h -- the exception types that decide lmforge's exit codes.
// InputError (bad config, data or CLI usage) exits 2; TrainingError exits 1.
#pragma once

#include <stdexcept>
#include <string>

namespace lmforge {

// The user's input is wrong (a file, a key, a value). The message names it. Exit code 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Training cannot go on (non-finite loss or gradient norm). Exit code 1.
struct TrainingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace lmforge
