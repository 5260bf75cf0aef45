// launch/eval_command.h -- the `eval` and `report` sub-commands: option parsing, where results go,
// gates, printing. Suites run in experiments/eval_suite.h; reports are experiments/report.h's.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>

namespace lmforge::launch {

struct EvalCommands;  // the sub-commands and the values their options bind (eval_command.cpp)

// Adds eval and report to `app`. The result must outlive app.parse().
std::shared_ptr<EvalCommands> add_eval_commands(CLI::App& app);

// Runs the chosen one of them and returns its exit code (1 when a --gate is missed); -1 when
// none was chosen. Bad input throws InputError (main maps it to exit 2).
int run_eval_command(const EvalCommands& commands);

}  // namespace lmforge::launch
