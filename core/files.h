// core/files.h -- whole-file reads, atomic writes, JSON files and string suffix tests: the small
// file helpers every layer uses. What a file means (formats, run-directory names) lives elsewhere.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace lmforge {

// The whole file as bytes, or nullopt when it cannot be opened.
std::optional<std::string> try_read_file(const std::string& path);
// The whole file as bytes; InputError(`unreadable`) when it cannot be opened (callers word it).
std::string read_file(const std::string& path, const std::string& unreadable);
// The whole file, or "" when it cannot be opened (optional files of a run directory).
std::string read_file_or_empty(const std::string& path);

// Writes `text` to path.tmp.<pid>, fsyncs it and renames it over `path`: readers see the old
// file or the new one, never a half-written one.
void write_file_atomic(const std::string& path, const std::string& text);

// Parses a JSON file; InputError naming the file when absent or malformed.
nlohmann::json read_json_file(const std::string& path);

bool ends_with(const std::string& s, const std::string& suffix);
bool starts_with(const std::string& s, const std::string& prefix);

}  // namespace lmforge
