// launch/data_commands.h -- the data sub-commands: `tokenize` (text -> ids and pieces) and
// `chat-template` (messages -> a model's chat template's text or ids).
// main.cpp registers them and dispatches; the tokenizers are in data/.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>

namespace lmforge::launch {

struct DataCommands;  // the sub-commands and the values their options bind (data_commands.cpp)

std::shared_ptr<DataCommands> add_data_commands(CLI::App& app);
// The exit code of the data sub-command that was invoked, or -1 if none was.
int run_data_command(const DataCommands& c);

}  // namespace lmforge::launch
