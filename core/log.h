// core/log.h -- lines a rank reports: to the console (stderr) where asked, and to the rank's
// own file (<run>/logs/rank_<r>.log) once opened. What is worth a line is decided by callers.
#pragma once

#include <string>

namespace lmforge::log {

// Appends every later line to `path` (its directory is created). Throws InputError if it cannot.
void open_rank_file(const std::string& path);

// One line (no trailing newline needed): to stderr when `console`, and to the rank file if open.
void line(const std::string& text, bool console = true);

}  // namespace lmforge::log
