// launch/hf_commands.h -- the inference and interop sub-commands: `score`, `generate`, `export`.
// main.cpp registers them and dispatches; the work is in trainer/generate.h and trainer/hf_model.h.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>

namespace lmforge::launch {

struct HfCommands;  // the sub-commands and the values their options bind (hf_commands.cpp)

// Adds score, generate and export to `app`. The result must outlive app.parse().
std::shared_ptr<HfCommands> add_hf_commands(CLI::App& app);

// Runs the chosen one of them and returns its exit code; -1 when none was chosen.
// Bad input throws InputError (main maps it to exit 2).
int run_hf_command(const HfCommands& commands);

}  // namespace lmforge::launch
