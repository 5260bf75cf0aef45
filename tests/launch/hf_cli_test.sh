#!/usr/bin/env bash
# tests/launch/hf_cli_test.sh -- `lmforge score`, `generate` and `export` end to end on the Python
# reference fixtures (tests/fixtures/hf), and exit code 2 with a clear message for each kind of
# corrupt safetensors file and bad usage. Usage: hf_cli_test.sh path/to/lmforge
set -uo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
fixtures="$root/tests/fixtures/hf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_exit CODE PATTERN CMD... : exit code CODE and PATTERN in stderr.
expect_exit() {
  local code=$1 pattern=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  [ "$got" = "$code" ] || fail "exit $got (want $code): $* :: $(head -c 400 "$tmp/err")"
  grep -q -- "$pattern" "$tmp/err" || fail "stderr lacks '$pattern': $* :: $(head -c 400 "$tmp/err")"
}

for model in llama_gqa llama_tied_v5 qwen2_sharded_bf16 gpt2 gpt2_noprefix_f16 mistral_window qwen2_window_layers \
  llama_yarn llama_dynamic llama_longrope qwen3_gqa qwen3_tied_bf16 phi3_longrope phi3_partial_bf16 gemma2_bf16 \
  gemma3_text; do
  dir="$fixtures/$model"
  ids=$(python3 -c "import json;print(','.join(map(str,json.load(open('$dir/reference.json'))['score']['ids'])))")
  prompt=$(python3 -c "import json;print(','.join(map(str,json.load(open('$dir/reference.json'))['greedy']['prompt_ids'])))")
  "$bin" score --model "$dir" --ids "$ids" >"$tmp/score.json" || fail "$model: score exited $?"
  "$bin" generate --model "$dir" --prompt-ids "$prompt" --max-new-tokens 12 --json >"$tmp/gen.json" ||
    fail "$model: generate exited $?"
  # Log-probabilities within 1e-5 (fp32 against the float64 reference); greedy ids identical.
  python3 - "$dir/reference.json" "$tmp/score.json" "$tmp/gen.json" <<'EOF' || fail "$model: differs from reference"
import json, sys
ref, score, gen = (json.load(open(p)) for p in sys.argv[1:4])
worst = max(abs(a - b) for a, b in zip(score["logprobs"], ref["score"]["logprobs"]))
assert len(score["logprobs"]) == len(ref["score"]["logprobs"]), "length"
assert worst < 1e-5, "logprob differs by %g" % worst
assert abs(score["nll"] - ref["score"]["nll"]) < 1e-4, "nll"
assert gen["ids"] == ref["greedy"]["new_ids"], (gen["ids"], ref["greedy"]["new_ids"])
assert gen["sequence_ids"] == ref["greedy"]["prompt_ids"] + gen["ids"]
assert score["token_logprobs"][0] is None and score["token_logprobs"][1:] == score["logprobs"]
EOF
done

# generate without --json prints the ids when the directory has no tokenizer lmforge reads.
out=$("$bin" generate --model "$fixtures/llama_gqa" --prompt-ids 1,20,30,40 --max-new-tokens 3 --no-cache)
[ "$out" = "49 3 49" ] || fail "plain generate printed '$out'"
# Seeded sampling is reproducible.
a=$("$bin" generate --model "$fixtures/gpt2" --prompt-ids 1,2 --max-new-tokens 8 --temperature 1 --top-k 10 --top-p 0.9 --seed 5 --json)
b=$("$bin" generate --model "$fixtures/gpt2" --prompt-ids 1,2 --max-new-tokens 8 --temperature 1 --top-k 10 --top-p 0.9 --seed 5 --json)
[ "$a" = "$b" ] || fail "seeded sampling differs: $a vs $b"

# export: an HF directory re-exported (bf16, sharded) still loads and scores closely.
"$bin" export "$fixtures/llama_gqa" --out "$tmp/exported" --dtype bf16 --max-shard-mb 1 >/dev/null || fail "export exited $?"
[ -f "$tmp/exported/config.json" ] && [ -f "$tmp/exported/model.safetensors" ] || fail "export wrote no HF directory"
"$bin" score --model "$tmp/exported" --ids 1,5,9 >/dev/null || fail "exported directory does not load"

# A trained run: its directory scores and generates (byte tokenizer: text works), its export/ is
# an HF directory, and a second run trains from that export through model.from.
run=$("$bin" train "$root/configs/tiny.yaml" --set train.max_steps=3 --set train.eval_every=0 \
      --set run.output_dir="$tmp/runs" --set data.eval=[] 2>"$tmp/train.err") || fail "train exited $?: $(tail -3 "$tmp/train.err")"
[ -f "$run/export/config.json" ] && [ -f "$run/export/model.safetensors" ] && [ -f "$run/export/README.md" ] ||
  fail "the run has no HF export in $run/export"
mkdir -p "$tmp/rundir" && cp "$run/config.yaml" "$run/model.safetensors" "$tmp/rundir/"
s_run=$("$bin" score --model "$tmp/rundir" --ids 84,104,101,32) || fail "score on a run directory exited $?"
s_exp=$("$bin" score --model "$run/export" --ids 84,104,101,32) || fail "score on the export exited $?"
python3 -c "import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); assert abs(a['nll']-b['nll'])<1e-6, (a,b)" \
  "$s_run" "$s_exp" || fail "run directory and its export score differently"
"$bin" generate --model "$tmp/rundir" --prompt "The " --max-new-tokens 5 >/dev/null || fail "text generate on a run exited $?"
"$bin" score --model "$tmp/rundir" --text "The cat" >/dev/null || fail "text score on a run exited $?"
"$bin" train "$root/configs/tiny.yaml" --set train.max_steps=2 --set train.eval_every=0 --set data.eval=[] \
  --set run.output_dir="$tmp/runs2" --set model.from="$run/export" >/dev/null 2>"$tmp/train2.err" ||
  fail "training from the export exited $?: $(tail -3 "$tmp/train2.err")"
expect_exit 2 "model.hidden_size: conflicts with" "$bin" train "$root/configs/tiny.yaml" \
  --set model.from="$run/export" --set model.hidden_size=64

# An HF directory with a byte-level BPE tokenizer.json takes text; generate prints text.
cp -r "$fixtures/gpt2" "$tmp/withtok"
python3 - "$tmp/withtok/tokenizer.json" <<'PY'
import json, sys
vocab = {"h": 0, "e": 1, "l": 2, "o": 3, "\u0120": 4, "w": 5, "r": 6, "d": 7, "he": 8, "ll": 9, "hell": 10,
         "hello": 11, "\u0120w": 12, "or": 13, "\u0120wor": 14}
merges = ["h e", "l l", "he ll", "hell o", "\u0120 w", "o r", "\u0120w or"]
json.dump({"model": {"type": "BPE", "vocab": vocab, "merges": merges},
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"}},
          open(sys.argv[1], "w"))
PY
out=$("$bin" score --model "$tmp/withtok" --text "hello world") || fail "score --text exited $?"
python3 -c "import json,sys; r=json.loads(sys.argv[1]); assert r['ids']==[11,14,2,7], r" "$out" || fail "score --text ids: $out"
"$bin" generate --model "$tmp/withtok" --prompt "hello" --max-new-tokens 4 >/dev/null || fail "generate --prompt exited $?"

# Bad usage and bad input: exit 2 with the cause named.
expect_exit 2 "--ids or --text" "$bin" score --model "$fixtures/gpt2"
expect_exit 2 "'x' is not a token id" "$bin" score --model "$fixtures/gpt2" --ids 1,x
expect_exit 2 "outside the vocabulary" "$bin" score --model "$fixtures/gpt2" --ids 1,999
expect_exit 2 "no tokenizer lmforge can read" "$bin" generate --model "$fixtures/gpt2" --prompt "hi"
# Tokenizer files lmforge cannot read: token ids still score; text names the file and the reason.
cp -r "$fixtures/llama_gqa" "$tmp/unigram"
echo '{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}' >"$tmp/unigram/tokenizer.json"
"$bin" score --model "$tmp/unigram" --ids 1,5,9 >/dev/null || fail "ids with an unreadable tokenizer exited $?"
expect_exit 2 "unigram/tokenizer.json: a Unigram tokenizer is not supported (BPE is) (token ids still work)" \
  "$bin" score --model "$tmp/unigram" --text "hi"
expect_exit 2 "needs 41 positions; the model has 32 learned positions" "$bin" generate --model "$fixtures/gpt2" --prompt-ids 1 --max-new-tokens 40
expect_exit 2 "neither an HF model directory" "$bin" score --model "$tmp" --ids 1,2

# config.json keys whose math the family lacks: exit 2 naming the key, never a silently different model.
damage_config() {  # damage_config FIXTURE NAME PYTHON-EXPRESSION-ON-c: a copy whose config.json the expression edits
  rm -rf "$tmp/$2"
  cp -r "$fixtures/$1" "$tmp/$2"
  python3 -c "import json, sys; c = json.load(open(sys.argv[1])); $3; json.dump(c, open(sys.argv[1], 'w'))" "$tmp/$2/config.json"
}
damage_config qwen3_gqa qwen3_capped 'c["attn_logit_softcapping"] = 30.0'
expect_exit 2 "config.json: attn_logit_softcapping: 30.0 is not supported for model_type qwen3" \
  "$bin" score --model "$tmp/qwen3_capped" --ids 1,2
damage_config phi3_longrope phi3_biased 'c["attention_bias"] = True'
expect_exit 2 "config.json: attention_bias: true is not supported for model_type phi3" \
  "$bin" generate --model "$tmp/phi3_biased" --prompt-ids 1 --max-new-tokens 1
damage_config gemma3_text gemma3_v5rope 'c["rope_parameters"] = {"sliding_attention": {"rope_type": "yarn", "factor": 2}}'
expect_exit 2 "config.json: rope_parameters.sliding_attention: rope type 'yarn' is not supported" \
  "$bin" score --model "$tmp/gemma3_v5rope" --ids 1,2
damage_config gemma2_bf16 gemma2_gelu 'c["hidden_activation"] = "gelu"'
expect_exit 2 "config.json: hidden_activation: 'gelu' is not supported" "$bin" score --model "$tmp/gemma2_gelu" --ids 1,2

# Corrupt safetensors files: each a clear error naming the file, exit 2.
corrupt() {  # corrupt NAME PYTHON-BODY: a copy of llama_gqa whose model.safetensors the body rewrites
  rm -rf "$tmp/$1"
  cp -r "$fixtures/llama_gqa" "$tmp/$1"
  python3 - "$tmp/$1/model.safetensors" <<EOF
import json, struct, sys
path = sys.argv[1]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
def write(h, d, claimed=None):
    text = json.dumps(h).encode()
    open(path, "wb").write(struct.pack("<Q", claimed if claimed is not None else len(text)) + text + d)
$2
EOF
}
corrupt truncated 'open(path, "wb").write(raw[:len(raw) - 100])'
expect_exit 2 "model.safetensors: tensor '.*'.*outside the data buffer" "$bin" score --model "$tmp/truncated" --ids 1,2
corrupt overlap 'k = sorted(x for x in header if x != "__metadata__")[1]; b, e = header[k]["data_offsets"]; header[k]["data_offsets"] = [b - 4, e - 4]; write(header, data)'
expect_exit 2 "model.safetensors: .*overlap\|model.safetensors: .*hole" "$bin" score --model "$tmp/overlap" --ids 1,2
corrupt huge 'write(header, data, claimed=1 << 40)'
expect_exit 2 "model.safetensors: header length 1099511627776 exceeds 100 MB" "$bin" score --model "$tmp/huge" --ids 1,2
corrupt duplicate 'text = json.dumps(header); k = "model.norm.weight"; text = text[:-1] + ", \"" + k + "\": " + json.dumps(header[k]) + "}"; open(path, "wb").write(struct.pack("<Q", len(text)) + text.encode() + data)'
expect_exit 2 "model.safetensors: tensor 'model.norm.weight' appears twice" "$bin" score --model "$tmp/duplicate" --ids 1,2
corrupt wrongsize 'header["model.norm.weight"]["shape"] = [33]; write(header, data)'
expect_exit 2 "model.safetensors: tensor 'model.norm.weight': shape x dtype size is 132 bytes but data_offsets span 128" "$bin" score --model "$tmp/wrongsize" --ids 1,2
corrupt badjson 'open(path, "wb").write(struct.pack("<Q", 5) + b"{abc}" + data)'
expect_exit 2 "model.safetensors: header is not valid JSON" "$bin" score --model "$tmp/badjson" --ids 1,2
corrupt baddtype 'header["model.norm.weight"]["dtype"] = "Q7"; write(header, data)'
expect_exit 2 "tensor 'model.norm.weight': unknown dtype 'Q7'" "$bin" generate --model "$tmp/baddtype" --prompt-ids 1 --max-new-tokens 1
corrupt missing 'del header["model.norm.weight"]; write(header, data)'
expect_exit 2 "model.safetensors: tensors cover" "$bin" score --model "$tmp/missing" --ids 1,2

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "hf cli: all checks passed"
