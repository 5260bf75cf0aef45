// data/pipeline.h -- `data:` config and `prepare_dataset`: sources -> records -> templates and loss
// masks -> filters, de-duplication, split -> packed rows -> HDF5 shards + manifest.json.
// Reading shards back and sampling them is data/shards.h and data/sampler.h.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "data/template.h"

namespace lmforge::config {
class Section;
}

namespace lmforge::data {

class Tokenizer;

struct SourceConfig {
  std::vector<std::string> paths;   // files, globs or directories (required; relative to the working
                                    // directory); .gz and .zst are decompressed
  std::string format = "text";      // text | jsonl | alpaca | chat
  std::string separator;            // text: a line equal to this splits a file into documents; "": one per file
  std::string field = "text";       // jsonl: the field holding the document
  std::string instruction = "instruction", input = "input", output = "output";  // alpaca: field names
  std::string messages = "messages";  // chat: the list of {role, content}
  std::string template_name;        // alpaca: default "alpaca"; chat: default "chatml" (built-ins); chat:
                                    // "model" renders with the tokenizer's chat template (chat_template.h)
  double weight = 1.0;              // documents repeated floor(w) times, plus once more with probability frac(w)
  std::string split = "auto";       // auto: data.eval_fraction decides per document | train | eval
  std::string key;                  // the config key named in errors about the paths
};

struct DataConfig {
  std::vector<std::string> train;   // shorthand: plain-text sources for training (one document per file)
  std::vector<std::string> eval;    // shorthand: plain-text held-out sources
  std::vector<SourceConfig> sources;
  std::vector<PromptTemplate> templates;  // named; usable by sources next to the built-ins
  bool train_on_prompt = false;     // false: prompt tokens and non-assistant turns carry no loss
  double eval_fraction = 0.0;       // share of `auto` documents held out, chosen by a seeded hash
  int64_t min_tokens = 1;           // documents shorter than this (without eos) are dropped
  int64_t max_tokens = 0;           // longer documents are dropped; 0: no limit
  bool dedup = true;                // exact duplicates (same text) are kept once
  bool normalize = true;            // CRLF -> LF and trailing whitespace of each line removed
  bool cross_document_attention = true;  // false: packed documents do not attend to each other
  std::string on_error = "error";   // error | skip: malformed records stop prepare or are counted and skipped
  std::string cache_dir;            // prepared datasets; empty: <run.output_dir>/cache
  int64_t shard_rows = 8192;        // rows per shard file: ~4 MiB of uint16 ids at seq_len 256
  int64_t workers = 0;              // tokenising threads; 0 (auto): every core this process may use,
                                    // as the shards and the id do not depend on it
};
void read_data_config(config::Section& s, DataConfig& c);

// What identifies a prepared dataset besides the data config.
struct PrepareOptions {
  int64_t seq_len = 0;   // tokens per training row (a row stores seq_len + 1 ids)
  uint64_t seed = 0;     // the train/eval split and source weights
  bool quiet = false;    // no progress lines
};

// What callers read of a dataset's manifest.json, typed (the manifest itself is formats.md's).
struct DatasetSplit {
  int64_t rows = 0, tokens = 0;
  nlohmann::json summary;  // the manifest's entry for the split without its shard list
};
struct DatasetManifest {
  DatasetSplit train, eval;
  nlohmann::json stats, templates;
};
DatasetManifest read_dataset_manifest(const nlohmann::json& manifest);

struct PreparedDataset {
  std::string dir;        // <cache_dir>/<id>
  std::string id;         // dataset id: sha256 over inputs, tokenizer, templates and pipeline config
  nlohmann::json manifest;
  bool reused = false;    // an identical dataset was already prepared
  DatasetManifest summary() const { return read_dataset_manifest(manifest); }
};

// Prepares (or reuses) the dataset, streaming: memory holds the dedup digests (21-43 bytes per
// document), one shard's rows per split and a few 1 MiB batches per worker, never the corpus.
// Bad inputs throw InputError naming the file and line (and field or byte offset); nothing
// half-written is left: the directory appears by rename. A killed prepare leaves <id>.partial,
// which the next one continues from (its shards verified by SHA-256); one process prepares a
// dataset at a time (<id>.lock).
PreparedDataset prepare_dataset(const DataConfig& cfg, const Tokenizer& tokenizer, const PrepareOptions& opt);

// One record after templates: text segments, each trained on or not. For `data inspect`.
struct Segment {
  std::string text;
  bool trained = true;
};
struct Record {
  std::string where;  // file:line
  std::vector<Segment> segments;
  bool rendered = false;  // by a chat template, which writes its own bos/eos: Tokenizer::encode_rendered
};
// The records of every source in order (errors as prepare_dataset; skipped records are dropped).
// `tokenizer` gives the chat template of sources with `template: model`.
std::vector<Record> read_records(const DataConfig& cfg, int64_t limit, const Tokenizer* tokenizer = nullptr);

}  // namespace lmforge::data
