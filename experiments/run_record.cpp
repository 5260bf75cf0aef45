// experiments/run_record.cpp -- run ids, meta.json contents (code/library versions, host,
// status) and the metrics stream. Does not decide what is logged: the trainer does.
#include "experiments/run_record.h"

#include <H5public.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <torch/torch.h>

#include "trainer/config_reader.h"
#include "trainer/digest.h"
#include "trainer/errors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lmforge::experiments {

void read_run_config(config::Section& s, RunConfig& c) {
  s.field("name", c.name, {}, config::Need::required);
  s.field("seed", c.seed, config::at_least(0));
  s.field("output_dir", c.output_dir);
  if (c.name.find('/') != std::string::npos || c.name == "." || c.name == "..")
    s.error("name", "run.name '" + c.name + "' must be a plain directory name");
}

void read_logging_config(config::Section& s, LoggingConfig& c) {
  s.field("progress", c.progress, {"auto", "always", "never"});
}

void write_file_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp);
  }
  int fd = ::open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  fs::rename(tmp, path);
}

static std::string utc_now(const char* format) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

static std::string run_command(const std::string& cmd) {
  std::array<char, 256> buf{};
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return "";
  while (fgets(buf.data(), buf.size(), pipe)) out += buf.data();
  pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

static json code_version() {
  std::string git = "git -C '" LMFORGE_SOURCE_DIR "' ";
  std::string commit = run_command(git + "rev-parse HEAD 2>/dev/null");
  if (commit.empty()) return {{"git_commit", nullptr}, {"git_dirty", nullptr}, {"source_dir", LMFORGE_SOURCE_DIR}};
  bool dirty = !run_command(git + "status --porcelain --untracked-files=no 2>/dev/null").empty();
  return {{"git_commit", commit}, {"git_dirty", dirty}, {"source_dir", LMFORGE_SOURCE_DIR}};
}

static json library_versions() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return {{"libtorch", TORCH_VERSION},
          {"hdf5", std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel)},
          {"openssl", OpenSSL_version(OPENSSL_VERSION)},
          {"nlohmann_json", std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
                                std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
                                std::to_string(NLOHMANN_JSON_VERSION_PATCH)}};
}

RunRecord RunRecord::create(const RunConfig& run, const std::string& resolved_yaml,
                            const std::vector<std::string>& argv) {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::random_device entropy;  // the id's suffix only needs to differ between runs started together
  std::string salt = std::string(host) + std::to_string(getpid()) + std::to_string(entropy()) +
                     std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  RunRecord r;
  r.run_id_ = utc_now("%Y%m%dT%H%M%SZ") + "-" + sha256_hex(salt).substr(0, 6);
  r.dir_ = (fs::path(run.output_dir) / run.name / r.run_id_).string();
  std::error_code ec;
  fs::create_directories(r.dir_, ec);
  if (ec) throw InputError("run.output_dir: cannot create '" + r.dir_ + "': " + ec.message());
  write_file_atomic(r.dir_ + "/config.yaml", resolved_yaml);
  r.metrics_.open(r.dir_ + "/metrics.jsonl", std::ios::app);

  json meta = {{"run_id", r.run_id_},
               {"name", run.name},
               {"status", "running"},
               {"start_time", utc_now("%Y-%m-%dT%H:%M:%SZ")},
               {"end_time", nullptr},
               {"argv", argv},
               {"code", code_version()},
               {"libraries", library_versions()},
               {"host", host},
               {"pid", getpid()},
               {"seed", run.seed},
               {"config_sha256", sha256_hex(resolved_yaml)}};
  r.meta_text_ = meta.dump(2);
  r.write_meta();
  return r;
}

void RunRecord::write_meta() { write_file_atomic(dir_ + "/meta.json", meta_text_ + "\n"); }

void RunRecord::set_meta(const std::string& key, const json& value) {
  json meta = json::parse(meta_text_);
  meta[key] = value;
  meta_text_ = meta.dump(2);
  write_meta();
}

void RunRecord::append_metrics(const json& row) {
  metrics_ << row.dump() << "\n";
  metrics_.flush();
}

void RunRecord::finish(const std::string& status, const std::string& error) {
  json meta = json::parse(meta_text_);
  meta["status"] = status;
  meta["end_time"] = utc_now("%Y-%m-%dT%H:%M:%SZ");
  if (!error.empty()) meta["error"] = error;
  meta_text_ = meta.dump(2);
  write_meta();
}

}  // namespace lmforge::experiments
