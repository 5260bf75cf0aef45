#!/usr/bin/env bash
# tests/data/data_cli_test.sh -- `lmforge data prepare|inspect` and training on prepared shards:
# broken inputs exit 2 naming file and line, h5dump (an independent reader) sees the counts the
# manifest states, prepare is reused, and the run's meta.json records the dataset id; dataset ids
# match the pipeline before streaming; a prepare killed with SIGKILL resumes to the same dataset.
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
# b88188cd...: what this config gave before prepare streamed (main at 16384f1), for any data.workers.
for w in 1 2; do
  rm -rf "$work/cache_w"
  run data prepare "$work/data.yaml" --set data.workers=$w --set data.cache_dir="$work/cache_w"
  expect "workers $w: the dataset id of the whole-corpus pipeline" 0 '"dataset_id": "b88188cd08552f44769956b1f9829c68"'
done
run data prepare "$work/data.yaml" --set data.workers=0
expect "data.workers 0 is refused naming the key" 2 "data.workers" "expected auto or a number of threads"

# SIGKILL part-way, then again: the shards the checkpoint lists are reused and the result is the
# uninterrupted prepare's, shard for shard.
python3 - "$work/big.jsonl" <<'PY'
import random, sys
rng = random.Random(5)
words = "the of and a to in is you that it he was for on are as with his they at be this have from".split()
with open(sys.argv[1], "w") as f:
    for i in range(40000):
        f.write('{"text": "%d %s"}\n' % (i, " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))))
PY
big=(--set "data.sources=[{paths: $work/big.jsonl, format: jsonl}]" --set data.templates=[] --set data.shard_rows=64
     --set data.workers=2)
run data prepare "$work/data.yaml" "${big[@]}" --set data.cache_dir="$work/cache_ref"
expect "a prepare of 40000 documents" 0 '"reused": false'
ref=$(grep -o '"dir": "[^"]*"' "$work/out" | cut -d'"' -f4)
"$LMFORGE" data prepare "$work/data.yaml" "${big[@]}" --set data.cache_dir="$work/cache_kill" >"$work/killed.out" 2>&1 &
pid=$!
partial="$work/cache_kill/$(basename "$ref").partial"
for i in $(seq 1 600); do [ -f "$partial/state.json" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
if [ -f "$partial/state.json" ] && [ ! -e "$work/cache_kill/$(basename "$ref")" ]; then
  ok "killed after a checkpoint ($(ls "$partial" | grep -c '\.h5$') shards on disk)"
else
  not_ok "no checkpoint to kill at (state.json $(ls "$partial" 2>&1 | head -3))"
fi
run data prepare "$work/data.yaml" "${big[@]}" --set data.cache_dir="$work/cache_kill"
expect "the second prepare resumes" 0 "data: resuming" '"reused": false'
if python3 - "$ref" "$work/cache_kill/$(basename "$ref")" <<'PY'
import json, os, sys
a, b = (json.load(open(os.path.join(d, "manifest.json"))) for d in sys.argv[1:3])
for key in ("splits", "stats"):
    assert a[key] == b[key], "%s differ: %s vs %s" % (key, json.dumps(a[key])[:300], json.dumps(b[key])[:300])
for split in a["splits"].values():
    for s in split["shards"]:
        x, y = (open(os.path.join(d, s["file"]), "rb").read() for d in sys.argv[1:3])
        assert x == y, s["file"]
assert sorted(os.listdir(sys.argv[2])) == sorted(os.listdir(sys.argv[1])), "leftover files"
PY
then ok "the resumed dataset equals the uninterrupted one, shard bytes included"; else not_ok "resumed dataset differs (above)"; fi
if ls "$work/cache_kill" | grep -qE '\.partial|\.lock'; then not_ok "left behind: $(ls "$work/cache_kill")"; else ok "no .partial or .lock left"; fi

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
