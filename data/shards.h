// data/shards.h -- the HDF5 shard format: packing documents into rows, writing a shard, and
// opening a prepared split with every shard verified. Deciding what goes into rows is pipeline.cpp.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.h"

namespace lmforge::data {

// Documents packed back to back into rows of row_len ids (seq_len + 1: inputs and shifted targets).
// positions restart at 0 at each document start and at each row start; a trailing partial row is
// padded with eos and mask 0.
class PackedRows {
 public:
  explicit PackedRows(int64_t row_len) : row_len_(row_len) {}
  void add_document(const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask);
  void finish(int32_t pad_id);
  // Forgets the first `n` complete rows (already written): row boundaries and positions go on as before.
  void drop_front(int64_t n);
  int64_t rows() const { return static_cast<int64_t>(ids_.size()) / row_len_; }
  int64_t row_len() const { return row_len_; }
  int64_t tokens() const { return real_tokens_; }  // without padding

  std::vector<int32_t> ids_;
  std::vector<uint8_t> mask_;      // 1: this id is trained on as a target
  std::vector<int32_t> positions_;
  std::vector<int64_t> doc_starts_;  // flat offsets of document starts

 private:
  int64_t row_len_;
  int64_t real_tokens_ = 0;
};

// "uint8", "uint16" or "int32": the smallest type holding ids below vocab_size.
std::string token_dtype_name(int64_t vocab_size);

struct ShardInfo {
  std::string sha256;
  int64_t bytes = 0, documents = 0;
};
// Writes rows [first, first + count) to `path` (through a temporary name, renamed when complete):
// datasets tokens (rows, row_len) in the smallest integer type, loss_mask (rows, row_len) uint8,
// positions (rows, row_len) uint16/int32, doc_starts (documents) int64 offsets into the shard's
// flattened tokens; chunked by 64 rows, deflate-compressed.
ShardInfo write_shard(const std::string& path, const PackedRows& rows, int64_t first, int64_t count,
                      int64_t vocab_size, const std::string& dataset_id, const std::string& split);

// One split's documents packed in order and written shard by shard as rows complete, so memory
// holds one shard's rows, not the split. Shard k holds rows [k * shard_rows, (k + 1) * shard_rows)
// of packing every document first: the files do not depend on when they are written.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string split, int64_t row_len, int64_t shard_rows, int64_t vocab_size,
              std::string dataset_id);
  // Returns how many shards this document completed (and wrote).
  int add_document(const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask);
  // Pads the last row with `pad_id` and writes the last shard.
  void finish(int32_t pad_id);
  // The manifest's entry for the split: documents, tokens, trained_tokens, rows, shards.
  nlohmann::json summary() const;
  int64_t documents() const { return documents_; }
  int64_t tokens() const { return tokens_; }
  int64_t rows() const { return rows_written_ + pending_.rows(); }
  int64_t max_id() const { return max_id_; }
  // Resuming: the counters and shard list as JSON, the unwritten rows as bytes; load takes both back.
  nlohmann::json state() const;
  std::string pending_bytes() const;
  void load(const nlohmann::json& state, const std::string& pending);
  int64_t pending_size() const { return static_cast<int64_t>(pending_.ids_.size()); }

 private:
  void write(int64_t rows);
  std::string dir_, split_, dataset_id_;
  int64_t shard_rows_, vocab_size_;
  PackedRows pending_;
  nlohmann::json shards_ = nlohmann::json::array();
  int64_t rows_written_ = 0, documents_ = 0, tokens_ = 0, trained_ = 0, max_id_ = -1;
};

// One split ("train" or "eval") of a prepared dataset. Opening checks the manifest, each shard's
// size and SHA-256 and the token range against `vocab_size`; any failure is an InputError naming
// the shard. Reads are serialised (HDF5 is not thread-safe here).
class ShardSet {
 public:
  ShardSet(const std::string& dataset_dir, const std::string& split, int64_t vocab_size,
           bool cross_document_attention);
  int64_t rows() const { return total_rows_; }
  int64_t row_len() const { return row_len_; }
  // The given global row indices as a batch (targets masked to -100 where loss_mask is 0).
  Batch read(const std::vector<int64_t>& rows) const;
  // Rows [0, min(rows(), max_rows)) in batches of batch_size: fixed evaluation batches.
  std::vector<Batch> leading_batches(int64_t batch_size, int64_t max_rows) const;

 private:
  struct Shard {
    std::string path;
    int64_t first_row = 0, rows = 0;
  };
  std::vector<Shard> shards_;
  int64_t total_rows_ = 0, row_len_ = 0, vocab_size_ = 0;
  bool cross_document_attention_ = true;
};

}  // namespace lmforge::data
