#!/usr/bin/env bash
# tests/data/chat_template_cli_test.sh -- `lmforge chat-template` against Jinja2 (with transformers'
# settings, chat_template_reference.py): every template under tests/fixtures/chat_templates with every
# message list, add_generation_prompt off and on, byte for byte; raise_exception exits 2 with its message.
# Exit 77 (skipped) when /usr/bin/python3 lacks jinja2 (Debian: python3-jinja2).
# Usage: chat_template_cli_test.sh PATH/TO/lmforge   (ctest passes it; run from the source root)
set -u
LMFORGE=${1:?usage: chat_template_cli_test.sh PATH/TO/lmforge}
if ! /usr/bin/python3 -c 'import jinja2' 2>/dev/null; then
  echo "# skipped: /usr/bin/python3 has no jinja2 (apt-get install python3-jinja2)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../launch/tap.sh"
fixtures=tests/fixtures/chat_templates

# One model directory per template: tokenizer_config.json holding it, as HF ships them.
for t in "$fixtures"/*.jinja; do
  name=$(basename "$t" .jinja)
  mkdir -p "$work/$name"
  /usr/bin/python3 -c 'import json, sys
print(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "chat_template": open(sys.argv[1], encoding="utf-8").read()}))' \
    "$t" >"$work/$name/tokenizer_config.json"
  for m in "$fixtures"/messages/*.json; do
    for gen in 0 1; do
      printf '%s\t%s\t%s\t%s\n' "$work/$name/tokenizer_config.json" "$m" "$gen" \
        "$work/$name/$(basename "$m" .json).$gen.want" >>"$work/cases.tsv"
    done
  done
done
/usr/bin/python3 tests/data/chat_template_reference.py "$work/cases.tsv" || { echo "reference renderer failed"; exit 1; }

# One lmforge run per template and add_generation_prompt over all its non-raising message lists
# (texts come back NUL-separated); each raising case on its own, for its exit code and message.
same=0 raised=0
for dir in "$work"/*/; do
  dir=${dir%/}
  [ -f "$dir/tokenizer_config.json" ] || continue
  for gen in 0 1; do
    flag=(); [ "$gen" = 1 ] && flag=(--add-generation-prompt)
    batch=() wants=()
    for m in "$fixtures"/messages/*.json; do
      want="$dir/$(basename "$m" .json).$gen.want"
      if head -c 7 "$want" | grep -q '^RAISE: '; then
        message=$(sed '1s/^RAISE: //' "$want")
        "$LMFORGE" chat-template --model "$dir" --messages "$m" "${flag[@]}" >"$work/got" 2>"$work/out"
        rc=$?
        if [ "$rc" = 2 ] && grep -qF -- "$message" "$work/out"; then raised=$((raised + 1)); else
          not_ok "$(basename "$dir") $(basename "$m") add_generation_prompt=$gen: exit $rc, wanted 2 with '$message'"; fi
      else
        batch+=(--messages "$m") wants+=("$want")
      fi
    done
    [ "${#wants[@]}" -eq 0 ] && continue
    "$LMFORGE" chat-template --model "$dir" "${batch[@]}" "${flag[@]}" >"$work/got" 2>"$work/out"
    rc=$?
    [ "${#wants[@]}" -gt 1 ] || printf '\0' >>"$work/got"
    /usr/bin/python3 -c 'import sys
parts = open(sys.argv[1], "rb").read().split(b"\0")[:-1]
for i, path in enumerate(sys.argv[2:]):
    open(sys.argv[1] + "." + str(i), "wb").write(parts[i] if i < len(parts) else b"<missing>")' "$work/got" "${wants[@]}"
    for i in "${!wants[@]}"; do
      if [ "$rc" = 0 ] && cmp -s "${wants[$i]}" "$work/got.$i"; then
        same=$((same + 1))
      else
        { echo "exit $rc"; diff <(cat -A "${wants[$i]}") <(cat -A "$work/got.$i") | head -10; } >>"$work/out"
        not_ok "$(basename "$dir") ${wants[$i]##*/}: differs from Jinja2"
      fi
    done
  done
done
[ "$same" -gt 0 ] && ok "$same renderings byte-identical to Jinja2, $raised raise_exception cases exit 2 with the message"
[ "$raised" -gt 0 ] || not_ok "no case exercised raise_exception"

# --ids: the rendered text tokenized without a second bos (the template writes its own).
mkdir -p "$work/sp"
cp tests/fixtures/sentencepiece/bpe.model "$work/sp/tokenizer.model"
printf '{"bos_token": "<s>", "chat_template": "{{ bos_token }}{%% for m in messages %%}{{ m.role }}: {{ m.content }}\\n{%% endfor %%}"}' \
  >"$work/sp/tokenizer_config.json"
echo '[{"role": "user", "content": "hello world"}]' >"$work/one.json"
run() { "$LMFORGE" "$@" >"$work/out" 2>&1; rc=$?; }
run chat-template --model "$work/sp" --messages "$work/one.json"
text=$(cat "$work/out")
run tokenize --tokenizer "$work/sp" --text "$text"
want_ids=$(cat "$work/out")
run chat-template --model "$work/sp" --messages "$work/one.json" --ids
expect "--ids prints the rendered text's ids" 0 "$want_ids"

# data inspect / prepare with `template: model`: only the assistant's turn is trained.
echo '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}' >"$work/chat.jsonl"
cat >"$work/sft.yaml" <<YAML
base: $PWD/configs/tiny.yaml
run: {output_dir: $work/runs}
model: {vocab_size: 320}
tokenizer: {kind: sentencepiece, path: $work/sp}
data:
  train: []
  eval: []
  sources:
    - {paths: $work/chat.jsonl, format: chat, template: model}
  cache_dir: $work/cache
YAML
run data inspect "$work/sft.yaml" --record 0
expect "data inspect shows the rendered record" 0 "--- no loss (prompt) ---" "--- trained ---"
if [ "$(grep -A1 -- '--- no loss' "$work/out" | tail -1)" = "<s>user: hi" ] &&
   [ "$(grep -A1 -- '--- trained ---' "$work/out" | tail -1)" = "assistant: yo" ]; then
  ok "data inspect: the user turn carries no loss, the assistant's does"
else
  not_ok "data inspect segments"
fi
run data prepare "$work/sft.yaml"
expect "data prepare records the chat template's version" 0 '"dataset_id"'
manifest=$(grep -o '"dir": "[^"]*"' "$work/out" | cut -d'"' -f4)/manifest.json
if grep -q '"model": "[0-9a-f]\{16\}"' "$manifest"; then ok "manifest templates.model is a 16-hex version"; else not_ok "manifest templates: $(grep -A2 '"templates"' "$manifest")"; fi

# generate --chat: the prompt is the rendered one-turn chat with the generation prompt, as --ids gives it.
# A tiny byte-level BPE (ids < the fixture model's 64) over the llama_gqa fixture's weights.
mkdir -p "$work/llama"
cp tests/fixtures/hf/llama_gqa/config.json tests/fixtures/hf/llama_gqa/model.safetensors "$work/llama/"
/usr/bin/python3 -c 'import json, sys
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = {c: i for i, c in enumerate(letters + ":\u0120\u010a")}
added = [{"id": 40, "content": "<s>", "special": True}, {"id": 41, "content": "<|turn|>", "special": True}]
json.dump({"model": {"type": "BPE", "vocab": vocab, "merges": []},
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
           "decoder": {"type": "ByteLevel"}, "added_tokens": added}, open(sys.argv[1] + "/tokenizer.json", "w"))
json.dump({"bos_token": "<s>", "chat_template": "{{ bos_token }}{% for m in messages %}<|turn|>{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|turn|>assistant:{% endif %}"},
          open(sys.argv[1] + "/tokenizer_config.json", "w"))' "$work/llama"
echo '[{"role": "user", "content": "hello"}]' >"$work/hello.json"
run chat-template --model "$work/llama" --messages "$work/hello.json" --add-generation-prompt --ids
want_ids=$(tr ' ' ',' <"$work/out")
run generate --model "$work/llama" --chat hello --max-new-tokens 2 --json
expect "generate --chat starts from the rendered chat" 0 "\"prompt_ids\":[$want_ids]"

# A syntax error names the file, line and column; exit 2.
mkdir -p "$work/broken"
printf '{"chat_template": "{%% for m in messages %%}\\n{{ m.content }\\n{%% endfor %%}"}' >"$work/broken/tokenizer_config.json"
run chat-template --model "$work/broken" --messages "$work/one.json"
expect "a syntax error names source, line and column" 2 "$work/broken/tokenizer_config.json: chat_template:2:"
run chat-template --model "$work/chatml" --messages "$work/missing.json"
expect "a missing messages file exits 2" 2 "missing.json"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
