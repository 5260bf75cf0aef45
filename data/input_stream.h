// data/input_stream.h -- one input file read in chunks as numbered lines: plain, .gz (zlib) and
// .zst (libzstd), told by the name. What a line means (a JSONL record, part of a document) is pipeline.cpp's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace lmforge::data {

// Where a reader stands: the decompressed byte offset of the next line and that line's number - 1.
struct StreamPosition {
  uint64_t offset = 0;
  int64_t line = 0;
};

class LineReader {
 public:
  // Throws InputError naming `config_key` when the file cannot be opened.
  LineReader(const std::string& path, const std::string& config_key);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line without its '\n' (as std::getline: a last line without '\n' counts, an empty
  // tail does not); false at the end. Corrupt or truncated compressed data throws InputError.
  bool next(std::string& line);
  // Everything not yet read, as it is (a whole-file document).
  std::string rest();
  // Moves to a position an earlier reader of the same file reported (resuming a prepare).
  void seek(const StreamPosition& at);
  StreamPosition position() const { return {consumed_, line_}; }
  // Bytes of the file as stored read so far (compressed bytes for .gz/.zst): for progress.
  uint64_t stored_bytes_read() const;

  struct Source;  // plain, gzip or zstd bytes

 private:
  bool fill();  // appends one chunk to the buffer; false at the end
  std::string path_;
  std::unique_ptr<Source> source_;
  std::string buffer_;
  size_t pos_ = 0;       // first unread byte of buffer_
  size_t scanned_ = 0;   // buffer_ before this holds no '\n' after pos_
  uint64_t consumed_ = 0;  // decompressed bytes handed out
  int64_t line_ = 0;
};

// Bytes of a file as stored, or 0 when it cannot be read.
uint64_t stored_size(const std::string& path);

}  // namespace lmforge::data
