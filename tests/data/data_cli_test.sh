#!/usr/bin/env bash
# tests/data/data_cli_test.sh -- `lmforge data prepare|inspect` and training on prepared shards:
# broken inputs exit 2 naming file and line, h5dump (an independent reader) sees the counts the
# manifest states, prepare is reused, and the run's meta.json records the dataset id.
# Usage: data_cli_test.sh PATH/TO/lmforge   (ctest passes it; run from the source root)
set -u
LMFORGE=${1:?usage: data_cli_test.sh PATH/TO/lmforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../launch/tap.sh"
run() { "$LMFORGE" "$@" >"$work/out" 2>&1; rc=$?; }

for i in $(seq 1 60); do echo "{\"instruction\": \"What is $i plus 1?\", \"output\": \"$((i + 1))\"}"; done >"$work/qa.jsonl"
cat >"$work/data.yaml" <<YAML
base: $PWD/configs/tiny.yaml
run:
  output_dir: $work/runs
data:
  train: []
  sources:
    - paths: $work/qa.jsonl
      format: alpaca
      template: qa
  templates:
    - name: qa
      prompt: "Q: {instruction}\nA: "
      response: "{output}"
  eval_fraction: 0.2
  cache_dir: $work/cache
train:
  max_steps: 3
YAML

run data prepare "$work/data.yaml"
expect "prepare writes a dataset" 0 '"dataset_id"' '"reused": false'
dir=$(grep -o '"dir": "[^"]*"' "$work/out" | cut -d'"' -f4)
rows=$(python3 -c "import json,sys; m=json.load(open('$dir/manifest.json')); print(sum(s['rows'] for s in m['splits']['train']['shards']))")
dumped=$(h5dump -H "$dir/train_00000.h5" | grep -A2 'DATASET "tokens"' | grep -o 'DATASPACE  SIMPLE { ( [0-9]*' | grep -o '[0-9]*$')
if [ -n "$dumped" ] && [ "$dumped" = "$rows" ]; then ok "h5dump sees the manifest's $rows rows"; else not_ok "h5dump rows '$dumped' vs manifest $rows"; fi
if h5dump -H "$dir/train_00000.h5" | grep -q 'H5T_STD_U16LE'; then ok "token ids stored as uint16"; else not_ok "token dtype"; fi

run data prepare "$work/data.yaml"
expect "unchanged inputs reuse the dataset" 0 '"reused": true'

run data inspect "$work/data.yaml" --record 2
expect "inspect shows the record with its mask" 0 "--- no loss (prompt) ---" "Q: What is 3 plus 1?" "--- trained ---"

run train "$work/data.yaml"
expect "training on the prepared shards" 0 "step 3/3"
id=$(python3 -c "import json; print(json.load(open('$dir/manifest.json'))['dataset_id'])")
if grep -rq "\"$id\"" "$work"/runs/*/*/meta.json; then ok "meta.json records the dataset id"; else not_ok "dataset id $id not in meta.json"; fi

printf '{"instruction": "a", "output": "b"}\n{"instruction": "a" "output": "b"}\n' >"$work/broken.jsonl"
sed "s#$work/qa.jsonl#$work/broken.jsonl#" "$work/data.yaml" >"$work/broken.yaml"
run data prepare "$work/broken.yaml"
expect "malformed JSON names file and line" 2 "$work/broken.jsonl:2: malformed JSON"
printf '{"instruction": "a"}\n' >"$work/broken.jsonl"
run data prepare "$work/broken.yaml"
expect "a missing field names the field and line" 2 "$work/broken.jsonl:1: record has no field 'output'"
printf '{"instruction": "a", "output": "\xc3("}\n' >"$work/broken.jsonl"
run data prepare "$work/broken.yaml"
expect "invalid UTF-8 names the byte offset" 2 "$work/broken.jsonl:1: invalid UTF-8 at byte offset 32"
printf '{"instruction": "a", "output": "\xc3("}\n{"instruction": "c", "output": "d"}\n' >"$work/broken.jsonl"
run data prepare "$work/broken.yaml" --set data.on_error=skip
expect "on_error: skip counts the record" 0 '"malformed": 1'

python3 - "$dir" <<'PY'
import json, sys
path = sys.argv[1] + "/train_00000.h5"
data = bytearray(open(path, "rb").read())
data[-30] ^= 0xFF
open(path, "wb").write(bytes(data))
PY
run train "$work/data.yaml"
expect "a corrupt shard stops training naming it" 2 "shard $dir/train_00000.h5: SHA-256 differs from the manifest"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
