// experiments/run_record.cpp -- run ids, meta.json contents (code/library versions, host,
// status) and the metrics stream. Does not decide what is logged: the trainer does.
#include "experiments/run_record.h"

#include <H5public.h>
#include <fcntl.h>
#include <sys/file.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <torch/torch.h>

#include "core/files.h"
#include "experiments/tensorboard.h"
#include "core/config_reader.h"
#include "core/digest.h"
#include "core/errors.h"

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
  s.choice("progress", c.progress, {{"auto", Progress::on_terminal}, {"always", Progress::always}, {"never", Progress::never}});
  s.field("tensorboard", c.tensorboard);
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

std::string code_version_text() {
  json v = code_version();
  if (v["git_commit"].is_null()) return "unknown";
  return v["git_commit"].get<std::string>() + (v["git_dirty"].get<bool>() ? "+dirty" : "");
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
  r.lock();
  write_file_atomic(RunDir{r.dir_}.config(), resolved_yaml);
  r.metrics_.open(RunDir{r.dir_}.metrics(), std::ios::app);

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

void RunRecord::lock() {
  int fd = ::open(files().lock().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError("cannot create " + files().lock());
  lock_fd_ = std::shared_ptr<int>(new int(fd), [](int* p) {
    ::close(*p);
    delete p;
  });
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) throw InputError("run directory " + dir_ + " is in use by another live process");
}

RunRecord RunRecord::reopen(const std::string& dir, int64_t from_step, const std::vector<std::string>& argv) {
  RunRecord r;
  r.dir_ = dir;
  r.lock();
  std::ifstream meta_in(RunDir{dir}.meta());
  json meta = json::parse(meta_in);
  r.run_id_ = meta.at("run_id").get<std::string>();
  meta["status"] = "running";
  meta["end_time"] = nullptr;
  meta.erase("error");
  meta["resumed"].push_back({{"time", utc_now("%Y-%m-%dT%H:%M:%SZ")}, {"from_step", from_step}, {"argv", argv},
                             {"pid", getpid()}, {"code", code_version()}});
  r.meta_text_ = meta.dump(2);
  r.write_meta();
  // Rows past the checkpoint were written by the interrupted process; the resumed one redoes them.
  std::ifstream metrics_in(RunDir{dir}.metrics());
  std::string line, kept;
  while (std::getline(metrics_in, line)) {
    auto row = json::parse(line, nullptr, false);
    if (!row.is_discarded() && row.value("step", int64_t(0)) <= from_step) kept += line + "\n";
  }
  write_file_atomic(RunDir{dir}.metrics(), kept);
  r.metrics_.open(RunDir{dir}.metrics(), std::ios::app);
  return r;
}

std::string find_unfinished_run(const std::string& output_dir, const std::string& name) {
  std::vector<std::string> runs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(output_dir) / name, ec))
    if (e.is_directory() && fs::exists(RunDir{e.path().string()}.meta())) runs.push_back(e.path().string());
  std::sort(runs.rbegin(), runs.rend());  // run ids start with their UTC start time
  for (const auto& dir : runs) {
    std::ifstream in(RunDir{dir}.meta());
    json meta = json::parse(in, nullptr, false);
    if (meta.is_discarded()) continue;
    std::string status = meta.value("status", "");
    if (status != "running" && status != "interrupted") continue;
    int fd = ::open(RunDir{dir}.lock().c_str(), O_RDWR | O_CREAT, 0644);
    bool live = fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) != 0;
    if (fd >= 0) ::close(fd);
    if (!live) return dir;
  }
  return "";
}

void RunMetricsFile::append_metrics(const json& row) {
  std::ofstream metrics(path_, std::ios::app);
  metrics << row.dump() << "\n";
}

void RunRecord::write_meta() { write_file_atomic(files().meta(), meta_text_ + "\n"); }

void RunRecord::set_meta(const std::string& key, const json& value) {
  json meta = json::parse(meta_text_);
  meta[key] = value;
  meta_text_ = meta.dump(2);
  write_meta();
}

void RunRecord::append_metrics(const json& row) {
  metrics_ << row.dump() << "\n";
  metrics_.flush();
  if (tensorboard_) tensorboard_->add_row(row);
}

void RunRecord::enable_tensorboard() { tensorboard_ = std::make_shared<TensorBoardWriter>(files().tensorboard()); }

void RunRecord::finish(const std::string& status, const std::string& error) {
  json meta = json::parse(meta_text_);
  meta["status"] = status;
  meta["end_time"] = utc_now("%Y-%m-%dT%H:%M:%SZ");
  if (!error.empty()) meta["error"] = error;
  meta_text_ = meta.dump(2);
  write_meta();
}

}  // namespace lmforge::experiments
