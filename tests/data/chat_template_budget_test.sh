#!/usr/bin/env bash
# tests/data/chat_template_budget_test.sh -- hostile chat templates (they come with downloaded model
# directories) stop fast with exit 2 naming the template file and line:col, in `lmforge chat-template`,
# `data prepare` and `train` alike: string repetition, nested loops, a huge output. Needs nothing external.
# Usage: chat_template_budget_test.sh PATH/TO/lmforge   (ctest passes it; run from the source root)
set -u
LMFORGE=${1:?usage: chat_template_budget_test.sh PATH/TO/lmforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../launch/tap.sh"

# Each case: a template on one line, the column its error names, what the error says.
cat >"$work/cases.tsv" <<'EOF'
repeat	{{ 'a' * 1000000000000 }}	1:8	builds text of more than 8 MiB
nested	{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}	1:32	work budget
output	{% for i in range(100000) %}{{ 'x' * 1000 }}{{ messages[0].content }}{% endfor %}	1:36	builds text of more than 8 MiB
EOF
echo '[{"role": "user", "content": "hi"}]' >"$work/one.json"
echo '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}' >"$work/chat.jsonl"
mkdir -p "$work/sp"
cp tests/fixtures/sentencepiece/bpe.model "$work/sp/tokenizer.model"
run() {  # run NAME ARGS...: exit code in $rc, output in $work/out, seconds in $secs
  local start=$(date +%s.%N)
  timeout 60 "$LMFORGE" "$@" >"$work/out" 2>&1
  rc=$?
  secs=$(echo "$(date +%s.%N) - $start" | bc)
}
fast() { [ "$(echo "$secs < 2" | bc)" = 1 ]; }
while IFS=$'\t' read -r name template at says; do
  python3 -c 'import json, sys; json.dump({"chat_template": sys.argv[2]}, open(sys.argv[1], "w"))' \
    "$work/sp/tokenizer_config.json" "$template"
  config=$work/sp/tokenizer_config.json
  run chat-template --model "$work/sp" --messages "$work/one.json"
  expect "chat-template, $name: exit 2 naming the template's position" 2 "$config: chat_template:$at: " "$says"
  fast && ok "chat-template, $name: stopped in $secs s" || not_ok "chat-template, $name: took $secs s"
  cat >"$work/sft.yaml" <<YAML
base: $PWD/configs/tiny.yaml
run: {output_dir: $work/runs, name: hostile}
model: {vocab_size: 320}
tokenizer: {kind: sentencepiece, path: $work/sp}
train: {max_steps: 1}
data:
  train: []
  eval: []
  sources:
    - {paths: $work/chat.jsonl, format: chat, template: model}
  on_error: skip
  cache_dir: $work/cache
YAML
  run data prepare "$work/sft.yaml"
  expect "data prepare, $name (on_error: skip): exit 2 naming the record and the template's position" 2 \
    "$work/chat.jsonl:1: $config: chat_template:$at: " "$says"
  fast && ok "data prepare, $name: stopped in $secs s" || not_ok "data prepare, $name: took $secs s"
  run train "$work/sft.yaml"
  expect "train, $name: exit 2 naming the template's position" 2 "$config: chat_template:$at: " "$says"
done <"$work/cases.tsv"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
