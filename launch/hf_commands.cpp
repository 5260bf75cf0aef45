// launch/hf_commands.cpp -- `lmforge score`, `lmforge generate` and `lmforge export`: option
// parsing, id lists, JSON/text output. No model or file-format code lives here.
#include "launch/hf_commands.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/errors.h"
#include "core/run_dir.h"
#include "data/chat_template.h"
#include "data/hf_tokenizer.h"
#include "experiments/run_models.h"
#include "experiments/runs.h"
#include "parallel/launcher.h"
#include "trainer/generate.h"
#include "trainer/models/gguf_export.h"
#include "trainer/models/hf_model.h"
#include "trainer/peft/adapter_dir.h"
#include "trainer/peft/apply.h"

namespace lmforge::launch {

struct HfCommands {
  CLI::App* score = nullptr;
  CLI::App* generate = nullptr;
  CLI::App* export_cmd = nullptr;
  std::string model_dir, adapter_dir, ids, text, prompt, prompt_ids, chat, out_dir, dtype = "fp32";
  std::string format = "hf";  // hf: the model as it is | peft: a LoRA run's adapter | hf-merged | gguf
  std::string gguf_type = "f32";  // gguf: the matrices' type; f32 loses nothing
  std::string device = "cpu";  // score/generate: cpu | cuda | auto (CUDA when LibTorch sees a GPU)
  trainer::SamplingConfig sampling;
  bool json = false, no_cache = false, ignore_eos = false;
  int64_t max_shard_mb = 5000;
};

namespace {

std::vector<int64_t> parse_ids(const std::string& list, const std::string& option) {
  std::vector<int64_t> ids;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    while (used < item.size() && item[used] == ' ') ++used;
    if (item.empty() || used != item.size())
      throw InputError(option + ": '" + item + "' is not a token id (expected e.g. 1,2,3)");
    ids.push_back(v);
  }
  if (ids.empty()) throw InputError(option + ": no token ids given");
  return ids;
}

std::vector<int64_t> tokenize(const experiments::LoadedModel& m, const std::string& text, const std::string& dir) {
  if (!m.tokenizer)
    throw InputError(m.tokenizer_error.empty()
                         ? dir + ": no tokenizer lmforge can read in this directory; pass token ids instead"
                         : m.tokenizer_error + " (token ids still work)");
  std::vector<int64_t> ids;
  for (int32_t id : m.tokenizer->encode(text)) ids.push_back(id);
  return ids;
}

// --model, with the PEFT adapter of --adapter applied when given.
experiments::LoadedModel open_model(const HfCommands& c) {
  experiments::LoadedModel m = experiments::open_model_dir(c.model_dir);
  if (!c.adapter_dir.empty()) trainer::load_peft_adapter(*m.model, c.adapter_dir);
  parallel::DeviceRequest request = c.device == "cuda"  ? parallel::DeviceRequest::cuda
                                    : c.device == "auto" ? parallel::DeviceRequest::automatic
                                                         : parallel::DeviceRequest::cpu;
  parallel::DeviceChoice device = parallel::pick_device(request, /*local_rank=*/0, /*local_size=*/1);
  if (device.cuda) m.model->to(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device.index)));
  return m;
}

int run_score(const HfCommands& c) {
  experiments::LoadedModel m = open_model(c);
  std::vector<int64_t> ids = c.ids.empty() ? tokenize(m, c.text, c.model_dir) : parse_ids(c.ids, "--ids");
  trainer::check_sequence_length(m.config, static_cast<int64_t>(ids.size()), "scoring " + std::to_string(ids.size()) + " tokens");
  trainer::TokenScores s = trainer::score_tokens(*m.model, ids);
  nlohmann::json aligned = nlohmann::json::array({nullptr});  // [t]: log p(ids[t] | ids[:t]); none for t = 0
  for (double lp : s.logprobs) aligned.push_back(lp);
  nlohmann::json out = {{"ids", ids},
                        {"logprobs", s.logprobs},
                        {"token_logprobs", aligned},
                        {"nll", s.nll},
                        {"mean_nll", s.nll / static_cast<double>(s.logprobs.size())},
                        {"tokens_scored", s.logprobs.size()}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

// --chat: one user turn rendered with the model's chat template, ending in the assistant's opening.
std::vector<int64_t> chat_prompt(const experiments::LoadedModel& m, const std::string& user_text, const std::string& dir) {
  if (!m.tokenizer || !m.tokenizer->chat_template())
    throw InputError(dir + ": --chat needs a chat template (tokenizer_config.json or chat_template.jinja)");
  nlohmann::ordered_json messages = {{{"role", "user"}, {"content", user_text}}};
  std::string text = data::render_chat(*m.tokenizer->chat_template(), messages, true, "--chat");
  std::vector<int64_t> ids;
  for (int32_t id : m.tokenizer->encode_rendered(text)) ids.push_back(id);
  return ids;
}

int run_generate(const HfCommands& c) {
  experiments::LoadedModel m = open_model(c);
  std::vector<int64_t> prompt = !c.chat.empty()         ? chat_prompt(m, c.chat, c.model_dir)
                                : c.prompt_ids.empty() ? tokenize(m, c.prompt, c.model_dir)
                                                       : parse_ids(c.prompt_ids, "--prompt-ids");
  trainer::SamplingConfig s = c.sampling;
  s.use_cache = !c.no_cache;
  if (!c.ignore_eos) s.stop_ids = m.config.eos_token_ids;
  trainer::check_sequence_length(m.config, static_cast<int64_t>(prompt.size()) + s.max_new_tokens,
                                 "the prompt (" + std::to_string(prompt.size()) + " tokens) plus --max-new-tokens " +
                                     std::to_string(s.max_new_tokens));
  trainer::Generation g = trainer::generate(*m.model, prompt, s);
  std::string text;
  if (m.tokenizer) text = m.tokenizer->decode(std::vector<int32_t>(g.ids.begin(), g.ids.end()));
  if (c.json) {
    std::vector<int64_t> sequence = prompt;
    sequence.insert(sequence.end(), g.ids.begin(), g.ids.end());
    nlohmann::json out = {{"prompt_ids", prompt}, {"ids", g.ids}, {"sequence_ids", sequence},
                          {"finish_reason", g.finish_reason}};
    if (m.tokenizer) out["text"] = text;
    // Text cut inside a UTF-8 sequence: U+FFFD for the partial bytes, not an exception.
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (m.tokenizer) {
    std::printf("%s\n", text.c_str());
  } else {
    std::string line;
    for (int64_t id : g.ids) line += (line.empty() ? "" : " ") + std::to_string(id);
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

// --format peft and hf-merged: a LoRA run directory, or a base with --adapter.
void export_adapted(const HfCommands& c, const trainer::HfSaveOptions& options) {
  experiments::LoraRun run;
  if (c.adapter_dir.empty()) {
    run = experiments::open_lora_run(c.model_dir);
  } else {
    experiments::LoadedModel m = experiments::open_model_dir(c.model_dir);
    run.model = m.model;
    run.model_cfg = m.config;
    run.peft = trainer::read_peft_adapter_config(c.adapter_dir);
    run.base_dir = c.model_dir;
    trainer::load_peft_adapter(*run.model, c.adapter_dir);
  }
  if (c.format == "peft") {
    trainer::save_peft_adapter(*run.model, run.model_cfg, run.peft, run.base_dir, c.out_dir, options.dtype);
    return;
  }
  trainer::merge_lora(*run.model);  // in fp32, cast to the weights' dtype; --dtype applies on save
  trainer::HfSaveOptions merged = options;
  merged.copy_files_from = run.base_dir;
  trainer::save_hf_model(*run.model, run.model_cfg, c.out_dir, merged);
  if (auto tok = data::load_hf_tokenizer(run.base_dir))
    data::save_hf_tokenizer_files(data::tokenizer_of_model_dir(run.base_dir), *tok, c.out_dir);
}

// --format gguf: one file for llama.cpp; a LoRA run or --adapter is merged first.
void export_gguf(const HfCommands& c) {
  trainer::GgufExportOptions options;
  options.type = trainer::ggml_type_of(c.gguf_type);
  experiments::LoadedModel m = experiments::open_model_dir(c.model_dir);
  if (!m.tokenizer)
    throw InputError(m.tokenizer_error.empty() ? c.model_dir + ": no tokenizer lmforge can read; GGUF embeds one"
                                               : m.tokenizer_error);
  if (!c.adapter_dir.empty()) trainer::load_peft_adapter(*m.model, c.adapter_dir);
  trainer::merge_lora(*m.model);  // nothing to merge in a full model
  options.name = std::filesystem::path(c.model_dir).filename().string();
  if (options.name.empty() || options.name == ".") options.name = std::filesystem::absolute(c.model_dir).filename().string();
  for (const std::string& note : trainer::save_gguf(*m.model, m.config, *m.tokenizer, c.out_dir, options))
    std::fprintf(stderr, "warning: %s\n", note.c_str());
}

int run_export(const HfCommands& c) {
  if (c.format == "gguf") {
    export_gguf(c);
    std::printf("%s\n", c.out_dir.c_str());
    return 0;
  }
  trainer::HfSaveOptions options;
  options.dtype = c.dtype == "bf16" ? torch::kBFloat16 : c.dtype == "fp16" ? torch::kHalf : torch::kFloat;
  options.max_shard_bytes = c.max_shard_mb * 1'000'000;
  if (c.format != "hf" || !c.adapter_dir.empty()) {
    if (c.format == "hf") throw InputError("export --adapter: choose --format peft or --format hf-merged");
    export_adapted(c, options);
  } else {
    experiments::LoadedModel m = experiments::open_model_dir(c.model_dir);
    options.copy_files_from = m.config.from;
    trainer::save_hf_model(*m.model, m.config, c.out_dir, options);
    if (m.tokenizer) data::save_hf_tokenizer_files(m.tokenizer_source, *m.tokenizer, c.out_dir);
  }
  // Exported from a run: the card carries the run's lineage (from the run directory itself, or
  // from the run an `export/` directory sits in).
  for (const std::string& run : {c.model_dir, c.model_dir + "/.."})
    if (std::filesystem::exists(RunDir{run}.meta())) {
      experiments::write_model_card(run, c.out_dir);
      break;
    }
  std::printf("%s\n", c.out_dir.c_str());
  return 0;
}

}  // namespace

std::shared_ptr<HfCommands> add_hf_commands(CLI::App& app) {
  auto c = std::make_shared<HfCommands>();
  c->score = app.add_subcommand("score", "print each token's log-probability given its prefix, as JSON");
  c->score->add_option("--model", c->model_dir, "HF model directory or lmforge run directory")->required();
  c->score->add_option("--adapter", c->adapter_dir, "PEFT adapter directory applied to --model");
  c->score->add_option("--device", c->device, "cpu (default) | cuda | auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  auto* ids = c->score->add_option("--ids", c->ids, "comma-separated token ids, e.g. 1,2,3");
  auto* text = c->score->add_option("--text", c->text, "text, tokenized with the directory's tokenizer");
  ids->excludes(text);
  c->score->callback([ids, text] {
    if (ids->count() + text->count() == 0) throw CLI::RequiredError("--ids or --text");
  });

  c->generate = app.add_subcommand("generate", "continue a prompt (greedy unless --temperature > 0)");
  CLI::App* g = c->generate;
  g->add_option("--model", c->model_dir, "HF model directory or lmforge run directory")->required();
  g->add_option("--adapter", c->adapter_dir, "PEFT adapter directory applied to --model");
  g->add_option("--device", c->device, "cpu (default) | cuda | auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  auto* prompt = g->add_option("--prompt", c->prompt, "prompt text");
  auto* prompt_ids = g->add_option("--prompt-ids", c->prompt_ids, "comma-separated prompt token ids");
  auto* chat = g->add_option("--chat", c->chat, "a user message, rendered with the model's chat template");
  prompt->excludes(prompt_ids);
  chat->excludes(prompt)->excludes(prompt_ids);
  g->callback([prompt, prompt_ids, chat] {
    if (prompt->count() + prompt_ids->count() + chat->count() == 0)
      throw CLI::RequiredError("--prompt, --prompt-ids or --chat");
  });
  g->add_option("--max-new-tokens", c->sampling.max_new_tokens, "tokens to generate")->check(CLI::Range(0, 1 << 20));
  g->add_option("--temperature", c->sampling.temperature, "0: greedy; > 0: sample from softmax(logits / T)")
      ->check(CLI::Range(0.0, 1e6));
  g->add_option("--top-k", c->sampling.top_k, "sample among the k most likely tokens (0: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  g->add_option("--top-p", c->sampling.top_p, "sample among the smallest set with this much mass")
      ->check(CLI::Range(0.0, 1.0));
  g->add_option("--seed", c->sampling.seed, "sampling seed");
  g->add_flag("--json", c->json, "print {prompt_ids, ids (new tokens), sequence_ids, finish_reason[, text]}");
  g->add_flag("--no-cache", c->no_cache, "recompute the whole prefix each step (no KV cache)");
  g->add_flag("--ignore-eos", c->ignore_eos, "do not stop at the end-of-sequence token");

  c->export_cmd = app.add_subcommand("export", "write a model (HF or run directory) as an HF model directory or PEFT adapter");
  c->export_cmd->add_option("model", c->model_dir, "HF model directory or lmforge run directory")->required();
  c->export_cmd->add_option("--out", c->out_dir, "output directory")->required();
  c->export_cmd->add_option("--format", c->format,
                            "hf: the model as an HF directory; peft: a LoRA run's adapter as an HF PEFT "
                            "directory; hf-merged: adapters merged into an HF directory; gguf: one llama.cpp file "
                            "(--out model.gguf)")
      ->check(CLI::IsMember({"hf", "peft", "hf-merged", "gguf"}));
  c->export_cmd->add_option("--type", c->gguf_type, "gguf: matrix type f32 | f16 | bf16 | q8_0 | q4_0 (norms stay f32)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0"}));
  c->export_cmd->add_option("--adapter", c->adapter_dir, "PEFT adapter directory applied to the model");
  c->export_cmd->add_option("--dtype", c->dtype, "weights dtype")->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  c->export_cmd->add_option("--max-shard-mb", c->max_shard_mb, "shard the weights above this size")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  return c;
}

int run_hf_command(const HfCommands& c) {
  if (!*c.score && !*c.generate && !*c.export_cmd) return -1;
  parallel::configure_threads(parallel::ParallelConfig{}, parallel::detect_launch_env(), /*bf16_matmuls=*/false);
  if (*c.score) return run_score(c);
  if (*c.generate) return run_generate(c);
  if (*c.export_cmd) return run_export(c);
  return -1;
}

}  // namespace lmforge::launch
