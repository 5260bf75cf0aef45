// core/log.cpp -- the rank file behind log::line. One FILE per process, line-buffered so a
// rank that is killed leaves every completed line on disk. No formatting policy here.
#include "core/log.h"

#include <cstdio>
#include <filesystem>
#include <mutex>

#include "core/errors.h"

namespace lmforge::log {

namespace {
std::mutex g_mutex;
std::FILE* g_file = nullptr;
}  // namespace

void open_rank_file(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) throw InputError("cannot open the rank log '" + path + "'");
  std::setvbuf(f, nullptr, _IOLBF, 0);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_file) std::fclose(g_file);
  g_file = f;
}

void line(const std::string& text, bool console) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (console) std::fprintf(stderr, "%s\n", text.c_str());
  if (g_file) std::fprintf(g_file, "%s\n", text.c_str());
}

}  // namespace lmforge::log
