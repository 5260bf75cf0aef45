// data/input_stream.cpp -- LineReader over plain files, zlib's gzread and libzstd's streaming
// decompressor. No parsing here; the line is the unit handed on.
#include "data/input_stream.h"

#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/errors.h"
#include "core/files.h"

namespace fs = std::filesystem;

namespace lmforge::data {

namespace {
constexpr size_t kChunk = size_t{1} << 20;  // 1 MiB reads: few system calls, little memory
}

struct LineReader::Source {
  virtual ~Source() = default;
  virtual size_t read(char* out, size_t n) = 0;  // 0 at the end
  virtual uint64_t stored() const = 0;
  virtual bool seek(uint64_t) { return false; }  // true when the source moved there directly
};

namespace {

FILE* open_file(const std::string& path, const std::string& config_key) {
  if (fs::is_directory(path)) throw InputError(config_key + ": '" + path + "' is a directory, not a text file");
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw InputError(config_key + ": cannot read '" + path + "': " + std::strerror(errno));
  return f;
}

struct PlainSource : LineReader::Source {
  PlainSource(const std::string& path, const std::string& key) : path(path), file(open_file(path, key)) {}
  ~PlainSource() override { std::fclose(file); }
  size_t read(char* out, size_t n) override {
    size_t got = std::fread(out, 1, n, file);
    if (got == 0 && std::ferror(file)) throw InputError(path + ": read error: " + std::strerror(errno));
    return got;
  }
  uint64_t stored() const override { return static_cast<uint64_t>(ftello(file)); }
  bool seek(uint64_t offset) override { return fseeko(file, static_cast<off_t>(offset), SEEK_SET) == 0; }
  std::string path;
  FILE* file;
};

struct GzipSource : LineReader::Source {
  GzipSource(const std::string& path, const std::string& key) : path(path) {
    std::fclose(open_file(path, key));  // the same messages as plain files for missing ones
    file = gzopen(path.c_str(), "rb");
    if (!file) throw InputError(key + ": cannot read '" + path + "': " + std::strerror(errno));
    gzbuffer(file, 1 << 18);
  }
  ~GzipSource() override { gzclose(file); }
  size_t read(char* out, size_t n) override {
    int got = gzread(file, out, static_cast<unsigned>(n));
    int code = Z_OK;
    const char* message = gzerror(file, &code);
    if (got < 0 || (code != Z_OK && code != Z_STREAM_END))
      throw InputError(path + ": corrupt or truncated gzip data (" + message + ")");
    if (got > 0 && gzdirect(file)) throw InputError(path + ": not gzip data, though the name ends in .gz");
    return static_cast<size_t>(got);
  }
  uint64_t stored() const override { return static_cast<uint64_t>(gzoffset(file)); }
  std::string path;
  gzFile file = nullptr;
};

struct ZstdSource : LineReader::Source {
  ZstdSource(const std::string& path, const std::string& key)
      : path(path), file(open_file(path, key)), ctx(ZSTD_createDCtx()), in_buffer(ZSTD_DStreamInSize()) {}
  ~ZstdSource() override {
    ZSTD_freeDCtx(ctx);
    std::fclose(file);
  }
  size_t read(char* out, size_t n) override {
    for (;;) {
      if (in.pos == in.size) {
        size_t got = std::fread(in_buffer.data(), 1, in_buffer.size(), file);
        if (got == 0) {
          if (std::ferror(file)) throw InputError(path + ": read error: " + std::strerror(errno));
          if (frame_open) throw InputError(path + ": truncated zstd data (the last frame is incomplete)");
          return 0;
        }
        in = {in_buffer.data(), got, 0};
      }
      ZSTD_outBuffer o{out, n, 0};
      size_t rc = ZSTD_decompressStream(ctx, &o, &in);
      if (ZSTD_isError(rc)) throw InputError(path + ": corrupt zstd data (" + ZSTD_getErrorName(rc) + ")");
      frame_open = rc != 0;
      if (o.pos > 0) return o.pos;
    }
  }
  uint64_t stored() const override { return static_cast<uint64_t>(ftello(file)) - (in.size - in.pos); }
  std::string path;
  FILE* file;
  ZSTD_DCtx* ctx;
  std::vector<char> in_buffer;
  ZSTD_inBuffer in{nullptr, 0, 0};
  bool frame_open = false;
};

}  // namespace

LineReader::LineReader(const std::string& path, const std::string& config_key) : path_(path) {
  if (ends_with(path, ".gz"))
    source_ = std::make_unique<GzipSource>(path, config_key);
  else if (ends_with(path, ".zst"))
    source_ = std::make_unique<ZstdSource>(path, config_key);
  else
    source_ = std::make_unique<PlainSource>(path, config_key);
}

LineReader::~LineReader() = default;

bool LineReader::fill() {
  buffer_.erase(0, pos_);
  scanned_ -= pos_;
  pos_ = 0;
  size_t had = buffer_.size();
  buffer_.resize(had + kChunk);
  size_t got = source_->read(buffer_.data() + had, kChunk);
  buffer_.resize(had + got);
  return got > 0;
}

bool LineReader::next(std::string& line) {
  for (;;) {
    size_t nl = buffer_.find('\n', std::max(pos_, scanned_));
    if (nl != std::string::npos) {
      line.assign(buffer_, pos_, nl - pos_);
      consumed_ += nl + 1 - pos_;
      pos_ = scanned_ = nl + 1;
      ++line_;
      return true;
    }
    scanned_ = buffer_.size();  // a long line is searched once, not again after every chunk
    if (!fill()) break;
  }
  if (pos_ == buffer_.size()) return false;
  line.assign(buffer_, pos_, std::string::npos);
  consumed_ += buffer_.size() - pos_;
  pos_ = scanned_ = buffer_.size();
  ++line_;
  return true;
}

std::string LineReader::rest() {
  while (fill()) {
  }
  std::string out = buffer_.substr(pos_);
  consumed_ += out.size();
  buffer_.clear();
  pos_ = scanned_ = 0;
  return out;
}

void LineReader::seek(const StreamPosition& at) {
  buffer_.clear();
  pos_ = scanned_ = 0;
  if (source_->seek(at.offset)) {
    consumed_ = at.offset;
  } else {
    while (consumed_ < at.offset) {  // compressed: decompress and drop what was read before
      if (pos_ == buffer_.size() && !fill()) throw InputError(path_ + ": shorter than when the prepare began");
      size_t skip = std::min<uint64_t>(buffer_.size() - pos_, at.offset - consumed_);
      pos_ += skip;
      consumed_ += skip;
    }
    scanned_ = pos_;
  }
  line_ = at.line;
}

uint64_t LineReader::stored_bytes_read() const { return source_->stored(); }

uint64_t stored_size(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<uint64_t>(n);
}

}  // namespace lmforge::data
