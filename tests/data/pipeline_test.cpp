// tests/data/pipeline_test.cpp -- the data pipeline end to end on real files: sources, templates
// and masks, filters, split, packing, HDF5 shards and manifest, reuse, damage, the sampler;
// streaming across chunks, workers, compressed files and directories.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <zlib.h>
#include <zstd.h>

#include "data/pipeline.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "core/digest.h"
#include "core/errors.h"

namespace fs = std::filesystem;
using namespace lmforge::data;
using lmforge::InputError;

namespace {

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lmforge_pipeline_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    cfg_.cache_dir = (dir_ / "cache").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    auto path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  SourceConfig source(const std::string& path, const std::string& format) {
    SourceConfig s;
    s.paths = {path};
    s.format = format;
    s.template_name = format == "alpaca" ? "alpaca" : format == "chat" ? "chatml" : "";
    return s;
  }
  PreparedDataset prepare(int64_t seq_len = 16) { return prepare_dataset(cfg_, tok_, {seq_len, 7, true}); }
  // The message of the InputError `fn` throws, or "" when it throws none.
  template <class Fn>
  static std::string error_of(Fn&& fn) {
    try {
      fn();
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
  DataConfig cfg_;
  ByteTokenizer tok_;
};

TEST_F(PipelineTest, TextDocumentsArePackedWithEosAndPositionsRestartPerDocument) {
  cfg_.sources = {source(write("a.txt", "abc"), "text"), source(write("b.txt", "xy"), "text")};
  auto d = prepare(/*seq_len=*/7);  // rows of 8 ids: "abc<eos>xy<eos>" + 1 pad
  EXPECT_EQ(d.manifest["splits"]["train"]["rows"], 1);
  EXPECT_EQ(d.manifest["splits"]["train"]["tokens"], 7);
  EXPECT_EQ(d.manifest["token_dtype"], "uint16") << "258 ids do not fit uint8";
  ShardSet set(d.dir, "train", 258, true);
  Batch b = set.read({0});
  std::vector<int64_t> inputs(b.inputs.data_ptr<int64_t>(), b.inputs.data_ptr<int64_t>() + 7);
  EXPECT_EQ(inputs, (std::vector<int64_t>{'a', 'b', 'c', 257, 'x', 'y', 257}));
  std::vector<int64_t> positions(b.positions.data_ptr<int64_t>(), b.positions.data_ptr<int64_t>() + 7);
  EXPECT_EQ(positions, (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2}));
  EXPECT_EQ(b.targets[0][6].item<int64_t>(), -100) << "the padding after the last eos carries no loss";
}

TEST_F(PipelineTest, AlpacaPromptsAreMaskedUnlessTrainOnPrompt) {
  cfg_.sources = {source(write("a.jsonl", R"({"instruction": "Add 2 and 3", "output": "5"})" "\n"), "alpaca")};
  cfg_.templates = {{"qa", "Q: {instruction}\nA: ", "{output}", {}}};
  cfg_.sources[0].template_name = "qa";
  auto records = read_records(cfg_, 0);
  ASSERT_EQ(records.size(), 1u);
  ASSERT_EQ(records[0].segments.size(), 2u);
  EXPECT_EQ(records[0].segments[0].text, "Q: Add 2 and 3\nA: ");
  EXPECT_FALSE(records[0].segments[0].trained);
  EXPECT_TRUE(records[0].segments[1].trained);
  auto d = prepare(/*seq_len=*/31);
  ShardSet set(d.dir, "train", 258, true);
  Batch b = set.read({0});
  // 18 prompt ids, then "5" and eos are the only trained targets.
  auto trained = (b.targets[0] != -100).nonzero().flatten();
  ASSERT_EQ(trained.numel(), 2);
  EXPECT_EQ(b.targets[0][trained[0].item<int64_t>()].item<int64_t>(), '5');
  EXPECT_EQ(b.targets[0][trained[1].item<int64_t>()].item<int64_t>(), 257);
  EXPECT_EQ(d.manifest["templates"]["qa"], cfg_.templates[0].version());
  cfg_.train_on_prompt = true;
  EXPECT_TRUE(read_records(cfg_, 0)[0].segments[0].trained);
}

TEST_F(PipelineTest, ChatTrainsOnlyAssistantTurns) {
  cfg_.sources = {source(write("c.jsonl", R"({"messages": [{"role": "system", "content": "s"},)"
                                          R"( {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})"
                                          "\n"),
                         "chat")};
  auto r = read_records(cfg_, 0).at(0);
  ASSERT_EQ(r.segments.size(), 3u);
  EXPECT_EQ(r.segments[2].text, "<|im_start|>assistant\nyo<|im_end|>\n");
  EXPECT_FALSE(r.segments[0].trained);
  EXPECT_FALSE(r.segments[1].trained);
  EXPECT_TRUE(r.segments[2].trained);
}

TEST_F(PipelineTest, BadRecordsNameFileLineAndFieldOrAreSkippedAndCounted) {
  std::string path = write("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok\"\n{\"other\": 1}\n{\"text\": \"a\xff\"}\n");
  cfg_.sources = {source(path, "jsonl")};
  std::string m = error_of([&] { prepare(); });
  EXPECT_NE(m.find(path + ":2: malformed JSON"), std::string::npos) << m;
  write("bad.jsonl", "{\"text\": \"ok\"}\n{\"other\": 1}\n");
  m = error_of([&] { prepare(); });
  EXPECT_NE(m.find(path + ":2: record has no field 'text'"), std::string::npos) << m;
  write("bad.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \"ab\xff\"}\n");
  m = error_of([&] { prepare(); });
  EXPECT_NE(m.find(path + ":3: invalid UTF-8 at byte offset 12"), std::string::npos) << m;
  write("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok\"\n{\"other\": 1}\n{\"text\": \"a\xff\"}\n");
  cfg_.on_error = "skip";
  auto d = prepare();
  EXPECT_EQ(d.manifest["stats"]["dropped"]["malformed"], 3);
  EXPECT_EQ(d.manifest["stats"]["documents"], 1);
}

TEST_F(PipelineTest, FiltersDedupAndSplitAreCountedAndSeeded) {
  std::string lines;
  for (int i = 0; i < 200; ++i) lines += "{\"text\": \"document number " + std::to_string(i) + "\"}\n";
  lines += "{\"text\": \"document number 0\"}\n{\"text\": \"\"}\n{\"text\": \"x\"}\n";
  lines += "{\"text\": \"" + std::string(300, 'y') + "\"}\n";
  cfg_.sources = {source(write("d.jsonl", lines), "jsonl")};
  cfg_.min_tokens = 2;
  cfg_.max_tokens = 100;
  cfg_.eval_fraction = 0.25;
  auto d = prepare();
  const auto& dropped = d.manifest["stats"]["dropped"];
  EXPECT_EQ(dropped["duplicate"], 1);
  EXPECT_EQ(dropped["empty"], 1);
  EXPECT_EQ(dropped["too_short"], 1);
  EXPECT_EQ(dropped["too_long"], 1);
  int64_t eval_docs = d.manifest["splits"]["eval"]["documents"], train_docs = d.manifest["splits"]["train"]["documents"];
  EXPECT_EQ(eval_docs + train_docs, 200);
  // 200 draws at p = 0.25: mean 50, sd 6.1; 30..70 is beyond 3 sd either side.
  EXPECT_GT(eval_docs, 30);
  EXPECT_LT(eval_docs, 70);
  fs::remove_all(cfg_.cache_dir);
  EXPECT_EQ(prepare().manifest["splits"]["eval"]["documents"], eval_docs) << "the split is a seeded hash";
}

TEST_F(PipelineTest, ShardsAndManifestAgreeAndPrepareIsReusedUntilAnInputChanges) {
  std::string text;
  for (int i = 0; i < 50; ++i) text += "line " + std::to_string(i) + "\n---\n";
  std::string path = write("t.txt", text);
  cfg_.sources = {source(path, "text")};
  cfg_.sources[0].separator = "---";
  cfg_.shard_rows = 4;
  auto first = prepare(/*seq_len=*/15);
  EXPECT_FALSE(first.reused);
  EXPECT_EQ(first.manifest["stats"]["documents"], 50);
  int64_t rows = 0;
  for (const auto& s : first.manifest["splits"]["train"]["shards"]) {
    std::string file = first.dir + "/" + s["file"].get<std::string>();
    hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0) << file;
    hid_t ds = H5Dopen2(f, "tokens", H5P_DEFAULT);
    hid_t space = H5Dget_space(ds);
    hsize_t dims[2];
    H5Sget_simple_extent_dims(space, dims, nullptr);
    EXPECT_EQ(static_cast<int64_t>(dims[0]), s["rows"].get<int64_t>());
    EXPECT_EQ(dims[1], 16u);
    rows += static_cast<int64_t>(dims[0]);
    H5Sclose(space);
    H5Dclose(ds);
    H5Fclose(f);
  }
  EXPECT_EQ(rows, first.manifest["splits"]["train"]["rows"].get<int64_t>());
  EXPECT_GT(first.manifest["splits"]["train"]["shards"].size(), 1u);
  auto again = prepare(15);
  EXPECT_TRUE(again.reused);
  EXPECT_EQ(again.id, first.id);
  write("t.txt", text + "one more\n");
  EXPECT_NE(prepare(15).id, first.id) << "a changed input gives a new dataset";
  for (const auto& entry : fs::directory_iterator(cfg_.cache_dir))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << "left behind: " << entry.path();
}

TEST_F(PipelineTest, DamagedShardsAndOutOfVocabularyIdsAreNamed) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "some text " + std::to_string(i) + "\n";
  cfg_.sources = {source(write("t.txt", text), "text")};
  auto d = prepare();
  std::string shard = d.dir + "/train_00000.h5";
  std::string m = error_of([&] { ShardSet(d.dir, "train", 100, true); });
  EXPECT_NE(m.find("outside the model's vocabulary of 100"), std::string::npos) << m;
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-20, std::ios::end);
    f.put('\x5a');
  }
  m = error_of([&] { ShardSet(d.dir, "train", 258, true); });
  EXPECT_NE(m.find("shard " + shard + ": SHA-256 differs"), std::string::npos) << m;
  fs::resize_file(shard, fs::file_size(shard) / 2);
  m = error_of([&] { ShardSet(d.dir, "train", 258, true); });
  EXPECT_NE(m.find("shard " + shard + ": "), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
}

TEST_F(PipelineTest, SamplerIsSeededCoversEveryRowPerEpochAndResumesExactly) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "row " + std::to_string(i) + " text\n";
  cfg_.sources = {source(write("t.txt", text), "text")};
  auto d = prepare(/*seq_len=*/7);
  auto set = std::make_shared<ShardSet>(d.dir, "train", 258, true);
  const int64_t n = set->rows();
  ShardSampler a(set, 3), b(set, 3), c(set, 4);
  auto epoch0 = a.stream_rows(0, n);
  EXPECT_EQ(std::set<int64_t>(epoch0.begin(), epoch0.end()).size(), static_cast<size_t>(n));
  EXPECT_EQ(b.stream_rows(0, n), epoch0);
  EXPECT_NE(c.stream_rows(0, n), epoch0);
  EXPECT_NE(a.stream_rows(n, n), epoch0) << "each epoch has its own order";

  // Two ranks of a global batch of 6 read disjoint halves; a sampler restored mid-epoch
  // continues exactly where the uninterrupted one is.
  ShardSampler rank0(set, 3), rank1(set, 3);
  for (int step = 0; step < 3; ++step) {
    auto r0 = rank0.next(6, 0, 3), r1 = rank1.next(6, 3, 3);
    EXPECT_FALSE(torch::equal(r0.inputs, r1.inputs));
  }
  std::string state = rank0.state();
  ShardSampler resumed(set, 3);
  resumed.restore(state);
  for (int step = 0; step < 2 * n; ++step) {  // across epoch boundaries
    auto expected = rank0.next(6, 0, 3);
    auto got = resumed.next(6, 0, 3);
    ASSERT_TRUE(torch::equal(expected.inputs, got.inputs)) << "step " << step;
    ASSERT_TRUE(torch::equal(expected.targets, got.targets));
  }
}

// A corpus with duplicates, filtered documents, weights and an eval share: everything the
// in-order half decides.
std::string mixed_corpus(int n) {
  std::string lines;
  for (int i = 0; i < n; ++i) {
    lines += "{\"text\": \"document " + std::to_string(i % (n - 7)) + " " + std::string(static_cast<size_t>(i % 23), 'w') + "\"}\n";
    if (i % 50 == 0) lines += "{\"text\": \"\"}\n\n";
  }
  return lines;
}

std::vector<std::string> shard_hashes(const PreparedDataset& d) {
  std::vector<std::string> out;
  for (const char* split : {"train", "eval"})
    for (const auto& s : d.manifest["splits"][split]["shards"]) out.push_back(lmforge::sha256_file(d.dir + "/" + s["file"].get<std::string>()));
  return out;
}

TEST_F(PipelineTest, WorkersGiveByteIdenticalShardsAndTheSameId) {
  cfg_.sources = {source(write("m.jsonl", mixed_corpus(1200)), "jsonl")};
  cfg_.sources.push_back(source(write("n.jsonl", mixed_corpus(500)), "jsonl"));
  cfg_.sources[1].weight = 1.5;
  cfg_.eval_fraction = 0.1;
  cfg_.max_tokens = 30;
  cfg_.shard_rows = 16;
  cfg_.workers = 1;
  auto one = prepare(/*seq_len=*/31);
  ASSERT_GT(one.manifest["splits"]["train"]["shards"].size(), 5u);
  for (int64_t workers : {2, 5}) {
    cfg_.workers = workers;
    cfg_.cache_dir = (dir_ / ("cache" + std::to_string(workers))).string();
    auto many = prepare(31);
    EXPECT_FALSE(many.reused);
    EXPECT_EQ(many.id, one.id) << workers << " workers";
    EXPECT_EQ(many.manifest, one.manifest) << workers << " workers";
    EXPECT_EQ(shard_hashes(many), shard_hashes(one)) << workers << " workers: the shard files themselves";
  }
  EXPECT_GT(one.manifest["stats"]["dropped"]["duplicate"].get<int64_t>(), 0);
  EXPECT_GT(one.manifest["stats"]["dropped"]["empty"].get<int64_t>(), 0);
}

TEST_F(PipelineTest, DatasetIdsAreThoseOfTheWholeCorpusPipeline) {
  // Ids from the pipeline before streaming (main at 16384f1): today's configs keep their datasets.
  cfg_.sources = {source(write("t.txt", "one\n---\ntwo\n---\nthree\n"), "text")};
  cfg_.sources[0].separator = "---";
  cfg_.eval_fraction = 0.5;
  cfg_.workers = 3;
  auto d = prepare(/*seq_len=*/16);
  EXPECT_EQ(d.id, "b50a433f4feb9c5f6cf08cfa077b0445");
  EXPECT_EQ(d.manifest["stats"]["documents"], 3);
}

TEST_F(PipelineTest, LinesAreCountedAcrossChunksAndLongLinesSurvive) {
  std::string lines;
  for (int i = 0; i < 30000; ++i) lines += "{\"text\": \"line " + std::to_string(i) + " of a file larger than one read\"}\n";
  lines += "{\"text\": \"" + std::string(3 << 20, 'z') + "\"}\n";  // a 3 MiB line spans reads
  std::string path = write("big.jsonl", lines + "{\"text\": \"ok\"\n");
  cfg_.sources = {source(path, "jsonl")};
  cfg_.max_tokens = 100;
  cfg_.workers = 2;
  std::string m = error_of([&] { prepare(); });
  EXPECT_NE(m.find(path + ":30002: malformed JSON"), std::string::npos) << m.substr(0, 200);
  cfg_.on_error = "skip";
  auto d = prepare();
  EXPECT_EQ(d.manifest["stats"]["dropped"]["malformed"], 1);
  EXPECT_EQ(d.manifest["stats"]["dropped"]["too_long"], 1) << "the 3 MiB line is one record";
  EXPECT_EQ(d.manifest["stats"]["records"], 30001);
}

std::string gzip(const std::string& text) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);  // +16: a gzip header
  std::string out(deflateBound(&z, text.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string zstd(const std::string& text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3));
  return out;
}

std::vector<int64_t> all_tokens(const PreparedDataset& d) {
  ShardSet set(d.dir, "train", 258, true);
  std::vector<int64_t> rows(static_cast<size_t>(set.rows()));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  Batch b = set.read(rows);
  return std::vector<int64_t>(b.inputs.data_ptr<int64_t>(), b.inputs.data_ptr<int64_t>() + b.inputs.numel());
}

TEST_F(PipelineTest, GzipAndZstdSourcesGiveThePlainFilesRowsAndDamageIsNamed) {
  std::string text = mixed_corpus(2000);
  cfg_.sources = {source(write("p.jsonl", text), "jsonl")};
  auto plain = all_tokens(prepare());
  for (const auto& [name, bytes] : {std::pair{std::string("p.jsonl.gz"), gzip(text)}, std::pair{std::string("p.jsonl.zst"), zstd(text)}}) {
    cfg_.sources = {source(write(name, bytes), "jsonl")};
    EXPECT_EQ(all_tokens(prepare()), plain) << name;
    std::string path = write(name, bytes.substr(0, bytes.size() / 2));
    std::string m = error_of([&] { prepare(); });
    EXPECT_NE(m.find(path + ": "), std::string::npos) << m;
    EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  }
  std::string path = write("fake.gz", "{\"text\": \"plain\"}\n");
  cfg_.sources = {source(path, "jsonl")};
  EXPECT_NE(error_of([&] { prepare(); }).find(path + ": not gzip data"), std::string::npos);
  std::string bad_line = gzip("{\"text\": \"a\"}\n{\"text\": 1}\n");
  path = write("bad.jsonl.gz", bad_line);
  cfg_.sources = {source(path, "jsonl")};
  EXPECT_NE(error_of([&] { prepare(); }).find(path + ":2: field 'text' is not a string"), std::string::npos);
}

TEST_F(PipelineTest, DirectoriesAndGlobsAreReadInByteOrderOfTheirPaths) {
  fs::create_directories(dir_ / "corpus" / "sub");
  fs::create_directories(dir_ / "corpus" / ".git");
  write("corpus/b.txt", "b");
  write("corpus/a.txt", "a");
  write("corpus/sub/c.txt", "c");
  write("corpus/B.txt", "B");
  write("corpus/.hidden", "h");
  write("corpus/.git/x", "x");
  cfg_.sources = {source((dir_ / "corpus").string(), "text")};
  auto records = read_records(cfg_, 0);
  std::vector<std::string> texts;
  for (const auto& r : records) texts.push_back(r.segments[0].text);
  EXPECT_EQ(texts, (std::vector<std::string>{"B", "a", "b", "c"}));
  EXPECT_EQ(prepare().manifest["inputs"].size(), 4u);
  fs::create_directories(dir_ / "empty");
  cfg_.sources = {source((dir_ / "empty").string(), "text")};
  cfg_.sources[0].key = "data.sources[0].paths";
  EXPECT_NE(error_of([&] { prepare(); }).find("data.sources[0].paths: directory '" + (dir_ / "empty").string() + "' holds no files"),
            std::string::npos);
}

}  // namespace
